"""The router loop of an instance among several sharing a Redis: it reads the streams of the
shards it holds through the consumer group, routes their entries (messages, agents' requests and
replies) and commits each pass in one fenced call (:mod:`router.service.redis.commit`).

All the conversations and queues of a shop live in exactly one router at a time, so the one
routing implementation, per-conversation order and queue priorities hold unchanged. Jobs from the
other loops (adopt a shard, a lost lease, the clock, announcements, a reload) run between reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import TYPE_CHECKING, Any

import msgspec
from redis.exceptions import RedisError, ResponseError

from router.core import i18n
from router.core.models import AcceptEvent, CloseEvent, Decision, Event, Message, WsHistoryItem
from router.core.pipeline import InputError
from router.core.runtime import Pacer
from router.service.journal import load_side_tables
from router.service.redis.commit import Batch, Commits, Lost
from router.service.redis.intake import owner_refusal
from router.service.redis.takeover import Takeover
from router.storage.redis.keys import GROUP

if TYPE_CHECKING:
    from router.service.redis.service import RedisService

_encode = msgspec.json.Encoder().encode
_message = msgspec.json.Decoder(Message)
_messages = msgspec.json.Decoder(list[Message])
_event = msgspec.json.Decoder(Event)
_history_item = msgspec.json.Decoder(WsHistoryItem)

BLOCK_MS = 50
BATCH = 512
TICK_S = 0.2


class StreamLoop:
    """Reads, routes and commits the shards this instance holds; the outlet of its agents' frames."""

    def __init__(self, service: RedisService) -> None:
        self.service = service
        self.link = service.link
        self.commits = Commits(service)
        self.takeover = Takeover(service)
        #: The batch being routed: frames and decisions go into its commit.
        self.batch: Batch | None = None
        self._jobs: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._tick_queued = False
        self._pg_tasks: list[asyncio.Task] = []
        self.pacer = Pacer()  # collections between callbacks, as in the SQLite engine's loop

    # -- life cycle (called by the Service) ---------------------------------------------------------

    async def open(self) -> None:
        s, link = self.service, self.link
        s.store.start()
        try:
            await link.r.ping()
        except RedisError as exc:
            raise RuntimeError(f"storage.redis_url {s.config.main.storage.redis_url}: {exc}") from exc
        await link.r.set(link.keys.token_key, secrets.token_bytes(32), nx=True)
        s.token_key = await link.r.get(link.keys.token_key)
        for n in range(link.keys.shards):
            with contextlib.suppress(ResponseError):
                await link.r.xgroup_create(link.keys.stream(n), GROUP, id="0", mkstream=True)
        await s.claims.open()
        self._pg_tasks = await s.pg.start() if s.pg is not None else []
        if s.pg is None:
            await load_side_tables(s)

    def tasks(self) -> list[asyncio.Task]:
        s = self.service
        return [asyncio.create_task(self._consume(), name="fenliu-redis-consumer"),
                asyncio.create_task(s.leases.run(), name="fenliu-redis-leases"),
                asyncio.create_task(s.claims.follow(), name="fenliu-redis-control"),
                asyncio.create_task(s.presence.relay(), name="fenliu-redis-frames"),
                asyncio.create_task(self._tick_loop(), name="fenliu-redis-ticker"),
                asyncio.create_task(self.pacer.run(), name="fenliu-gc"),
                *self._pg_tasks]

    def started(self) -> None:
        self.pacer.start()
        k = self.link.keys
        self.link.log.info("service_started", backend="redis", shards=k.shards, prefix=k.p)

    async def drain(self, consumer: asyncio.Task | None) -> None:
        """Let the consumer finish its pass (for a while)."""
        self._wake.set()
        if consumer is not None:
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(consumer), 5.0)
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await consumer

    async def close(self) -> None:
        """Give the leases back (the other loops have stopped), close the stores."""
        s = self.service
        await s.leases.leave()
        await s.store.close()
        if s.pg is not None:
            await s.pg.close()
        await self.link.close()
        self.link.log.info("service_stopped")

    # -- the outlet of agents' frames ------------------------------------------------------------------

    def send(self, agent_id: str, frame: msgspec.Struct) -> None:
        """Frames go out in the commit, to the agent's stream, wherever it is connected."""
        if self.batch is not None:
            self.batch.frames.append((agent_id, _encode(frame)))

    def decided(self, decisions: list[Decision]) -> None:
        if self.batch is not None:
            self.batch.decisions.extend(decisions)

    # -- the consumer -------------------------------------------------------------------------------

    def put(self, job: tuple[Any, ...]) -> None:
        self._jobs.put_nowait(job)
        self._wake.set()

    def begin(self) -> Batch:
        self.batch = Batch()
        self.service.claims.fenced = False
        if self.service.pg is not None:
            self.service.pg.begin()
        return self.batch

    async def commit(self, batch: Batch) -> None:
        self.batch = None
        await self.commits.write(batch)

    async def _consume(self) -> None:
        s, link = self.service, self.link
        while not s.stopping:
            try:
                while not self._jobs.empty():
                    await self._run(self._jobs.get_nowait())
                if s.leases.readable:
                    streams = {link.keys.stream(n): ">" for n in sorted(s.leases.readable)}
                    link.rt["read"].inc()
                    res = await link.r.xreadgroup(GROUP, link.id, streams, count=BATCH, block=BLOCK_MS)
                    if res:
                        await self._route_entries(res)
                else:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(BLOCK_MS / 1000):
                            await self._wake.wait()
            except asyncio.CancelledError:
                raise
            except (RedisError, Lost, OSError) as exc:
                await self.takeover.reset(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2)
            except Exception:  # routing must go on: the state is rebuilt from Redis
                link.log.exception("consumer_failed")
                await self.takeover.reset("consumer error")

    async def _run(self, job: tuple[Any, ...]) -> None:
        s = self.service
        kind = job[0]
        if kind == "adopt":
            await self.takeover.adopt(job[1], job[2])
        elif kind == "lost":
            await self.takeover.reset(f"lease lost on shards {job[1]}")
        elif kind == "rebalance":
            s.leases.rebalancing = False
            if len(s.leases.held) > job[1]:
                await self.takeover.reset(f"over the fair share of {job[1]} shards",
                                          keep=tuple(sorted(s.leases.held)[:job[1]]))
        elif kind == "reclaim":
            await self.takeover.reclaim(BATCH)
        elif kind == "reload":
            _, config, fut = job
            try:
                batch = self.begin()
                moved = s.router.reload(config)
                s.config = config
                s.make_adapters()
                s.desk.push(moved)
                await self.commit(batch)
            except BaseException as exc:
                if not fut.done():
                    fut.set_exception(exc)
                raise
            if not fut.done():
                fut.set_result(moved)
        else:
            batch = self.begin()
            if kind == "tick":
                self._tick_queued = False
                s.clock = max(time.time(), s.clock)
                s.desk.push(await s.router.advance(s.clock))
            elif kind == "refresh":
                d = s.router.dispatcher
                for aid in job[1] or sorted(d.agents):
                    s.desk.push(d.refresh(aid))
            elif kind == "control":
                for eid, fields in job[1]:
                    await s.claims.apply(eid, fields)
            await self.commit(batch)
            if kind == "control" and job[2]:
                s.claims.applied = job[2]

    async def _tick_loop(self) -> None:
        while not self.service.stopping:
            await asyncio.sleep(TICK_S)
            if not self._tick_queued:
                self._tick_queued = True
                self.put(("tick",))

    # -- routing entries ------------------------------------------------------------------------------

    async def _route_entries(self, res: list) -> None:
        batch = self.begin()
        for stream, entries in res:
            n = int(stream.rsplit(b":", 1)[1])
            for eid, fields in entries:
                try:
                    await self.route_entry(n, eid, fields, batch)
                except (RedisError, Lost, OSError):
                    raise
                except Exception as exc:  # one bad entry must not stop its shard
                    self.link.log.exception("entry_failed", shard=n, entry=eid.decode())
                    self._poisoned(fields, exc, batch)
        await self.commit(batch)

    async def _route_message(self, msg: Message) -> None:
        s = self.service
        router = s.router
        s.clock = clock = max(time.time(), s.clock)
        s.desk.push(await router.advance(clock))
        msg = s.buyers.enrich(msg)
        try:
            decisions = await router.handle_message(msg)
        except InputError as exc:
            decisions = [Decision(msg.msg_id, msg.shop_id, msg.conversation_id, "blocked", flags=[f"refused:{exc}"])]
        own = next((d for d in decisions if d.msg_id == msg.msg_id), None)
        s.memory.remember_message(msg, own, clock)
        if msg.order is not None and msg.order.order_id:
            s.buyers.order_buyer[(msg.shop_id, msg.order.order_id)] = msg.buyer_id
        s.desk.push(decisions, {msg.msg_id: msg})
        if s.pg is not None:
            s.pg.add_message(msg, clock, decisions)

    def _poisoned_message(self, msg: Message, exc: Exception) -> None:
        self.service.desk.push([Decision(msg.msg_id, msg.shop_id, msg.conversation_id, "blocked",
                                         flags=[f"error:{type(exc).__name__}"])])

    def _poisoned(self, fields: dict[bytes, bytes] | None, exc: Exception, batch: Batch) -> None:
        """An entry that raised is acknowledged (with a ``blocked`` decision naming the error for a
        message, a refusal for a request), so it is decided once instead of failing every owner
        that takes the shard."""
        if not fields:
            return
        if fields.get(b"k") == b"M":
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                for msg in _messages.decode(fields[b"b"]):
                    self._poisoned_message(msg, exc)
            return
        if fields.get(b"k") != b"m":
            req, inst = fields.get(b"req"), fields.get(b"inst")
            if req and inst:
                batch.results.append((inst.decode(), {"req": req.decode(), "ok": False,
                                                      "reason": i18n.portable(i18n._("internal error (logged)"))}))
            return
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            self._poisoned_message(_message.decode(fields[b"b"]), exc)

    async def route_entry(self, n: int, eid: bytes, fields: dict[bytes, bytes] | None, batch: Batch) -> None:
        s = self.service
        if n not in s.leases.held:
            return
        batch.acks.setdefault(n, []).append(eid)
        if not fields:
            return
        kind = fields.get(b"k")
        if kind == b"M":
            batch.backlog[n] = batch.backlog.get(n, 0) + int(fields.get(b"n", 0))
            for msg in _messages.decode(fields[b"b"]):
                try:
                    await self._route_message(msg)
                except (RedisError, Lost, OSError):
                    raise
                except Exception as exc:  # one bad message must not stop the others of its entry
                    self.link.log.exception("message_failed", shard=n, entry=eid.decode(), msg_id=msg.msg_id)
                    self._poisoned_message(msg, exc)
            return
        if kind == b"m":
            await self._route_message(_message.decode(fields[b"b"]))
            return
        if kind == b"r":  # an agent's reply through any instance, in order with the buyer's messages
            cid = fields[b"c"].decode()
            if cid in s.router.dispatcher.conversations:  # the history the next assigned frame carries
                s.memory.add(cid, _history_item.decode(fields[b"b"]))
            return
        await self._route_request(n, eid, fields, batch)

    async def _route_request(self, n: int, eid: bytes, fields: dict[bytes, bytes], batch: Batch) -> None:
        """An agent's request forwarded by any instance: decided here, the verdict to the asker."""
        s = self.service
        router = s.router
        s.clock = max(time.time(), s.clock)
        s.desk.push(await router.advance(s.clock))
        event = _event.decode(fields[b"b"])
        cid = getattr(event, "conversation_id", None)
        conv = router.dispatcher.conversations.get(cid or "")
        ok, reason, status, code = True, None, None, None
        refusal = owner_refusal(s.config, router.dispatcher.agents, event, conv, fields)
        if refusal is not None:
            ok = False
            reason, status, code = refusal
        else:
            closing = s.memory.owner.get(cid or "") if isinstance(event, CloseEvent) else None
            try:
                moved = await router.handle_event(event)
            except InputError as exc:
                ok, reason, moved = False, exc.args[0] if len(exc.args) == 1 else str(exc), []
            if ok and isinstance(event, CloseEvent):
                s.desk.closed(event.conversation_id, closing)
            if ok and isinstance(event, AcceptEvent):
                self.link.log.info("accepted", agent_id=event.agent_id, conversation_id=event.conversation_id)
            s.desk.push(moved)
            if ok and s.pg is not None:
                s.pg.add("event", f"e:{n}:{eid.decode()}", s.clock, (cid or "").partition(":")[0] or None, None,
                         cid, fields[b"b"], moved, n)
        req = fields.get(b"req")
        inst = fields.get(b"inst")
        if req and inst:
            batch.results.append((inst.decode(), {"req": req.decode(), "ok": ok, "reason": i18n.portable(reason),
                                                  "status": status, "code": code}))
