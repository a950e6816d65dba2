"""``fenliu serve`` over Redis: several instances, one routing implementation, no lost message,
no double assignment.

Why it is shaped this way (docs/deploy.md has the long version):

- **Ingest is stateless.** Any instance takes a signed batch, drops the messages already seen
  (the shop's sorted set of ``msg_id`` by the end of their dedupe window) and appends the rest to
  the stream of the shop's shard as one entry, in one Lua call, one round trip. ``202`` only
  after Redis answered; Redis unreachable → ``503``.
- **Routing is sharded by ownership.** Each instance holds leases on some shards (fair share of
  the live instances) and reads only those streams through the consumer group. All the
  conversations and queues of a shop live in exactly one :class:`router.core.pipeline.Router` at a
  time, so the one routing implementation, per-conversation order and queue priorities hold
  unchanged. A dead instance's leases expire; the new owner rebuilds its conversations from the
  mirror and takes the pending stream entries with ``XAUTOCLAIM``.
- **Capacity is shared and guarded.** An agent serves shops of many shards, so its status,
  load and the conversation→agent claims live in Redis and change only in ``claim.lua`` and
  ``release.lua`` (called through the Dispatcher's claim hook), both fenced by the shard lease.
  Their entries in the claim log are also their announcements (every instance follows it beside
  ``control``): they carry the agent's new global load, so every instance's ``least_load`` and
  availability count what the agent holds elsewhere (``shared_load``).
- **A batch commits atomically and fenced.** ``commit.lua`` acknowledges the entries, writes the
  conversation mirror, the decisions and the agents' frames only if the caller still holds every
  lease; otherwise nothing is written and the entries are redelivered to the new owner, so each
  message is decided exactly once. Its writes are grouped per key (one ``HSET`` per mirror hash,
  one ``XADD`` for the batch's decisions and one per agent for its frames), and an HTTP batch is
  one stream entry, so the Redis commands per message do not grow with what a batch holds. Any Redis error while routing drops the local state and
  rebuilds it from Redis (crash-only: the same path as a takeover).
- **Agents may connect anywhere.** Frames for an agent go to its stream ``to:{agent}`` (in the
  same commit), read by whichever instance holds its WebSocket; streams, unlike pub/sub, keep
  what was sent while that instance restarts. The agent's requests (accept, close, transfer)
  travel through the conversation's shard stream to its owner, in order with the messages.

Claims are synchronous Redis calls from inside the (synchronous) Dispatcher: one Lua round trip
per pick, which keeps a single routing implementation instead of an async copy of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import secrets
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

import msgspec
import redis
import redis.asyncio as aredis
import structlog
from prometheus_client import Counter
from redis.exceptions import RedisError, ResponseError

from router.core import i18n
from router.core.config import Config
from router.core.logging import bind_message
from router.core.models import (
    AcceptEvent,
    AgentStatusEvent,
    CloseEvent,
    Conversation,
    Decision,
    Event,
    Message,
    OutboundResult,
    TransferEvent,
    WsAssigned,
    WsClosed,
    WsHistoryItem,
)
from router.service.lifecycle import IdleCloser
from router.core.pipeline import InputError, Router
from router.storage.redis.keys import GROUP, Keys, lua
from router.service.access import Scope
from router.service.errors import NotYours, Overloaded
from router.service.service import HISTORY, ConversationView, IngestResult, Service, _Job

if TYPE_CHECKING:
    from router.service.redis.pg import PgSide

log = structlog.get_logger("fenliu.redis")

_encode = msgspec.json.Encoder().encode
_message = msgspec.json.Decoder(Message)
_messages = msgspec.json.Decoder(list[Message])
_event = msgspec.json.Decoder(Event)
_conversation = msgspec.json.Decoder(Conversation)
_history_item = msgspec.json.Decoder(WsHistoryItem)

LEASE_MS = 2000
RENEW_S = 0.4
SETTLE_S = 1.0
BLOCK_MS = 50
BATCH = 512
TICK_S = 0.2
REFRESH_S = 1.0
DEDUPE_S = 2 * 86400
AGENT_STREAM_MAX = 1000
DECISIONS_MAX = 200_000
REPLIES_TTL_MS = 60_000
REQUEST_TIMEOUT_S = 10.0
SEQ_OFFSET = 1 << 62


class Unavailable(Overloaded):
    """Redis did not answer: nothing was stored, so nothing may be acknowledged."""


class _Lost(Exception):
    """A shard lease was lost while routing: drop the local state."""


class Refused(InputError):
    """A request the conversation's owner refused, with the HTTP status and error code a local
    refusal of the same request would have (so an endpoint answers alike on every instance)."""

    def __init__(self, reason: Any, status: int = 409, code: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code


class Requester(msgspec.Struct, omit_defaults=True):
    """Who asked for a forwarded request: the account's fields the isolation rule reads, so the
    owner rebuilds the asker's :class:`router.service.access.Scope` and checks what a local request is
    checked for. ``via`` is ``ws`` (the agent's socket: its own conversations only) or ``http``
    (``POST /v1/conversations/{cid}/transfer``: a supervisor may move others')."""

    account: str
    role: str
    shops: tuple[str, ...]
    agent_id: str | None = None
    via: str = "ws"

    @classmethod
    def of(cls, scope: Scope, via: str = "ws") -> Requester:
        a = scope.account
        return cls(a.name, a.role, tuple(a.shops), a.agent_id, via)

    def scope(self, config: Config) -> Scope:
        from router.storage.accounts import Account

        return Scope(Account(self.account, self.role, self.shops, agent_id=self.agent_id), config)  # type: ignore[arg-type]


_requester = msgspec.json.Decoder(Requester)


class _Batch:
    """What one pass of the consumer writes in its commit."""

    __slots__ = ("acks", "backlog", "decisions", "frames", "results")

    def __init__(self) -> None:
        self.acks: dict[int, list[bytes]] = {}
        self.backlog: dict[int, int] = {}
        self.decisions: list[Decision] = []
        self.frames: list[tuple[str, bytes]] = []
        self.results: list[tuple[str, dict[str, Any]]] = []


class RedisService(Service):
    """The :class:`router.service.service.Service` of one instance among several sharing a Redis."""

    #: A note is checked against the claim in Redis (:meth:`add_note`), not against this
    #: instance's router, which may not route the conversation.
    checks_claims = True

    def __init__(self, config: Config, *, store_path: str | None = None, simulate: bool = False) -> None:
        super().__init__(config, store_path=store_path, simulate=simulate)
        st = config.main.storage
        self.id = f"{os.uname().nodename}-{os.getpid()}-{secrets.token_hex(3)}"
        self.keys = Keys(st.redis_prefix, st.shards)
        self.r = aredis.Redis.from_url(st.redis_url, socket_connect_timeout=2, socket_timeout=5)
        self.rs = redis.Redis.from_url(st.redis_url, socket_connect_timeout=2, socket_timeout=5)
        self._ingest = self.r.register_script(lua("ingest"))
        self._commit_lua = self.r.register_script(lua("commit"))
        self._renew = self.r.register_script(lua("renew"))
        self._unlease = self.r.register_script(lua("unlease"))
        self._claim_lua = self.rs.register_script(lua("claim"))
        self._release_lua = self.rs.register_script(lua("release"))
        self._leases: dict[int, str] = {}
        self._readable: set[int] = set()
        self._lease_seq = 0
        self._jobs: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._mirrored: dict[str, int] = {}
        self._batch: _Batch | None = None
        self._fenced = False
        self._waiting: dict[str, asyncio.Future] = {}
        self._frame_last: dict[str, bytes | str] = {}
        self._reply_last: bytes | str = "0-0"
        self._control_last: bytes | str = "$"
        self._claims_last: bytes | str = "$"
        self._claims_applied = b"0-0"
        self._missing_since: dict[str, float] = {}
        self._tick_queued = False
        self._rebalancing = False
        self.log = log.bind(instance=self.id)
        if simulate:
            self.log.warning("simulate_unsupported", reason="simulated agents are in-process sessions; with the redis "
                             "backend their frames are not delivered")
        self.round_trips = Counter("fenliu_redis_round_trips", "Round trips to Redis, by purpose", ["op"],
                                   registry=self.metrics.registry)
        self._rt = {op: self.round_trips.labels(op) for op in
                    ("ingest", "commit", "claim", "release", "read", "lease", "control", "frames", "request")}
        self.router = self._new_router(config)
        #: The PostgreSQL records store's side (``storage.records = "postgres"``), else ``None``.
        self.pg: PgSide | None = None
        if st.records == "postgres":
            from router.storage.pg import database_url
            from router.storage.pg.records import PgRecords
            from router.service.redis.pg import PgSide

            self.records = PgRecords(database_url(st), instance=self.id, pool_size=st.postgres_pool)
            self.pg = PgSide(self, self.records)

    # -- life cycle ---------------------------------------------------------------------------------

    def _new_router(self, config: Config) -> Router:
        """A router whose dedupe happened at ingest and whose assignments claim in Redis."""
        router = Router(config, reservations=True, clock=lambda: self._clock, dedupe=lambda shop, msg: False)
        router.dispatcher.claim_hook = self._claim
        router.dispatcher.release_hook = self._release
        return router

    async def start(self) -> None:
        self.store.start()
        try:
            await self.r.ping()
        except RedisError as exc:
            raise RuntimeError(f"storage.redis_url {self.config.main.storage.redis_url}: {exc}") from exc
        await self.r.set(self.keys.token_key, secrets.token_bytes(32), nx=True)
        self.token_key = await self.r.get(self.keys.token_key)
        for n in range(self.keys.shards):
            with contextlib.suppress(ResponseError):
                await self.r.xgroup_create(self.keys.stream(n), GROUP, id="0", mkstream=True)
        last_control, last_claim = await self.r.pipeline(transaction=False).xrevrange(self.keys.control, count=1) \
            .xrevrange(self.keys.claims, count=1).execute()
        self._control_last = last_control[0][0] if last_control else "0-0"
        self._claims_last = last_claim[0][0] if last_claim else "0-0"
        self._claims_applied = last_claim[0][0] if last_claim else b"0-0"  # the statuses below include them
        await self._load_statuses()
        pg_tasks = await self.pg.start() if self.pg is not None else []
        if self.pg is None:
            await self._load_side_tables()
        self._make_adapters()
        self._tasks = [
            asyncio.create_task(self._consume(), name="fenliu-redis-consumer"),
            asyncio.create_task(self._lease_loop(), name="fenliu-redis-leases"),
            asyncio.create_task(self._control_loop(), name="fenliu-redis-control"),
            asyncio.create_task(self._frames_loop(), name="fenliu-redis-frames"),
            asyncio.create_task(self._tick_loop(), name="fenliu-redis-ticker"),
            asyncio.create_task(self._outbox_loop(), name="fenliu-outbox"),
            asyncio.create_task(IdleCloser(self).run(), name="fenliu-idle-close"),
            *pg_tasks,
        ]
        if self.config.main.server.watch_config:
            self._tasks.append(asyncio.create_task(self.reloader.watch(), name="fenliu-config-watch"))
        gc.collect()
        gc.freeze()
        self.ready = True
        self.log.info("service_started", backend="redis", shards=self.keys.shards, prefix=self.keys.p)

    async def _load_statuses(self) -> None:
        """Every instance starts from the shared agent statuses (an agent never seen is offline)."""
        pipe = self.r.pipeline(transaction=False)
        agents = sorted(self.config.agents)
        for aid in agents:
            pipe.hsetnx(self.keys.agent(aid), "status", "offline")
        for aid in agents:
            pipe.hmget(self.keys.agent(aid), "status", "assigned", "seq", "load")
        res = await pipe.execute()
        d = self.router.dispatcher
        d.advance(self._clock)
        for aid, (status, assigned, seq, load) in zip(agents, res[len(agents):], strict=True):
            d.set_status(aid, (status or b"offline").decode())
            st = d.agents[aid]
            st.assigned = int(assigned or 0)
            st.last_seq = _claim_seq(seq or b"0") - SEQ_OFFSET
            d.set_shared_load(aid, int(load or 0) - st.load)
            d.refresh(aid)

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.ready = False
        for handle in self._grace.values():
            handle.cancel()
        self._wake.set()
        consumer = self._tasks[0] if self._tasks else None
        if consumer is not None:
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(consumer), 5.0)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(RedisError):
            for n, token in list(self._leases.items()):
                await self._unlease(keys=[self.keys.lease(n)], args=[token])
            await self.r.zrem(self.keys.instances, self.id)
            await self.r.delete(self.keys.replies(self.id))
        self._leases.clear()
        for adapter in self.adapters.values():
            with contextlib.suppress(Exception):
                await adapter.close()
        await self.store.close()
        if self.pg is not None:
            await self.pg.close()
        with contextlib.suppress(Exception):
            await self.r.aclose()
        self.rs.close()
        self.log.info("service_stopped")

    async def shared_agents(self, agent_ids: list[str]) -> dict[str, dict[str, Any]]:
        """For ``/v1/agents``: status, load, conversations and connection across all instances
        (the local router knows only the shards it routes)."""
        pipe = self.r.pipeline(transaction=False)
        for aid in agent_ids:
            pipe.hmget(self.keys.agent(aid), "status", "load")
            pipe.smembers(self.keys.held(aid))
            pipe.exists(self.keys.conn(aid))
        res = await pipe.execute()
        out = {}
        for i, aid in enumerate(agent_ids):
            (status, load), held, conn = res[3 * i:3 * i + 3]
            out[aid] = {"status": (status or b"offline").decode(), "load": int(load or 0),
                        "conversations": sorted(c.decode() for c in held), "connected": bool(conn)}
        return out

    def shared_health(self) -> dict[str, Any]:
        """For ``/healthz``: which instance this is, which shards it routes now and the last claim
        log entry it has applied (so a caller can wait until a claim's announcement is in)."""
        return {"backend": "redis", "instance": self.id, "shards": sorted(self._readable),
                "claims_applied": self._claims_applied.decode()}

    # -- ingest and requests (any instance) -----------------------------------------------------

    async def ingest(self, messages: list[Message]) -> IngestResult:
        """Append to the shop's shard stream (deduped); returns once Redis has them."""
        if self._stopping:
            raise Overloaded
        result = IngestResult()
        groups: dict[str, list[Message]] = {}
        for msg in messages:
            groups.setdefault(msg.shop_id, []).append(msg)
        try:
            for shop, msgs in groups.items():
                n = self.keys.shard(shop)
                keys = [self.keys.stream(n), self.keys.backlog(n), self.keys.dedupe(shop),
                        *(self.keys.seen(shop, m.msg_id) for m in msgs)]
                self._rt["ingest"].inc()
                flags = await self._ingest(keys=keys, args=[DEDUPE_S, self.config.main.server.ingest_queue_max,
                                                            int(time.time()), len(msgs), *(m.msg_id for m in msgs),
                                                            *(_encode(m) for m in msgs)])
                if flags == [-1]:
                    raise Overloaded(i18n._("overloaded: shard {n} has {limit} messages waiting to be routed, retry later",
                                            n=n, limit=self.config.main.server.ingest_queue_max))
                for m, fresh in zip(msgs, flags, strict=True):
                    if fresh:
                        result.accepted.append(m.msg_id)
                        self.metrics.count(self.metrics.messages, m.shop_id)
                    else:
                        result.duplicates.append(m.msg_id)
                        self.metrics.count(self.metrics.duplicates, m.shop_id)
        except RedisError as exc:
            self.log.warning("ingest_unavailable", error=str(exc), accepted=len(result.accepted))
            raise Unavailable(f"storage unavailable: {exc}") from exc
        return result

    async def event(self, event: Event, requester: str | Scope | None = None, *, via: str = "ws") -> list[Decision]:
        """Agent status changes apply everywhere at once; conversation events go to the owner of
        the conversation's shard, in order with its messages, and this waits for the verdict.
        ``requester``: the asker's scope (the owner checks it as a local request is checked;
        ``via`` says which), or an agent id (the holder check only). A refusal raises
        :class:`Refused`."""
        try:
            if isinstance(event, AgentStatusEvent):
                if event.agent_id not in self.config.agents:
                    raise InputError(i18n._("unknown agent {agent!r}", agent=event.agent_id))
                await self._set_status(event.agent_id, event.status)
                return []
            cid = event.conversation_id  # type: ignore[union-attr]
            shop = cid.partition(":")[0]
            if shop not in self.config.shops:
                raise InputError(i18n._("no open conversation {cid!r}", cid=cid))
            req = uuid.uuid4().hex
            fut: asyncio.Future = asyncio.get_running_loop().create_future()
            self._waiting[req] = fut
            try:
                self._rt["request"].inc()
                entry = {"k": "e", "b": _encode(event), "req": req, "inst": self.id}
                if isinstance(requester, Scope):  # "who" stays for an owner of an older version
                    entry["who"] = requester.agent_id or ""
                    entry["as"] = _encode(Requester.of(requester, via))
                else:
                    entry["who"] = requester or ""
                await self.r.xadd(self.keys.stream(self.keys.shard(shop)), entry)
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    ok, reason, status, code = await fut
            finally:
                self._waiting.pop(req, None)
        except RedisError as exc:
            raise InputError(i18n._("storage unavailable: {detail}", detail=str(exc))) from exc
        except TimeoutError:
            raise InputError(i18n._("the conversation's router did not answer in time; retry")) from None
        if not ok:
            raise Refused(reason, status or 409, code)
        return []

    async def _set_status(self, agent_id: str, status: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.keys.agent(agent_id), "status", status)
        pipe.xadd(self.keys.control, {"type": "status", "agent": agent_id, "status": status, "by": self.id},
                  maxlen=10000, approximate=True)
        await pipe.execute()

    async def reply(self, agent_id: str, conversation_id: str, text: str) -> OutboundResult:
        """Checked and sent by the instance the agent is connected to; the claim in Redis says
        whether the conversation is the agent's."""
        shop = conversation_id.partition(":")[0]
        if shop not in self.config.shops:
            raise NotYours(i18n._("no open conversation {cid!r}", cid=conversation_id))
        n = self.keys.shard(shop)
        owner, raw = await self.r.pipeline(transaction=False).hget(self.keys.owners(n), conversation_id) \
            .hget(self.keys.convs(n), conversation_id).execute()
        if owner is None or owner.decode() != agent_id:
            raise NotYours(i18n._("conversation {cid!r} is not yours", cid=conversation_id))
        if raw is not None and _conversation.decode(raw).state == "reserved":
            raise NotYours(i18n._("accept conversation {cid!r} before replying", cid=conversation_id))
        result = await self.router.check_reply(shop, text, conversation_id, agent_id)
        if not result.ok:
            self.metrics.replies.labels("refused").inc()
            if self.pg is not None and result.hits:  # quality inspection reads them from every instance
                await self.pg.records.add_violations([(time.time(), shop, conversation_id, agent_id, h.word, h.tag or "",
                                                       h.source) for h in result.hits])
            return result
        from adapters import OutboundReply

        now = time.time()
        buyer = conversation_id.partition(":")[2]
        if self.pg is not None:  # sent by whichever instance's sender claims the row (normally this one)
            rid = await self.pg.reply(shop, conversation_id, buyer, agent_id, result.text, now)
        else:
            rid = await self.store.call(lambda c: c.execute(
                "INSERT INTO outbox (shop_id, conversation_id, buyer_id, agent_id, text, ts, next_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (shop, conversation_id, buyer, agent_id, result.text, now, now)).lastrowid)
            self._queue_outbox(OutboundReply(rid, shop, conversation_id, buyer, result.text, now, agent_id), now, 0)
        self.metrics.replies.labels("sent").inc()
        if self.pg is None:  # with PostgreSQL the live figures follow every instance's replies (router/service/redis/pg.py)
            self._journaled([("reply", shop, conversation_id, buyer, agent_id, result.text, now)], {0: rid})
        with contextlib.suppress(RedisError):  # the reply is stored and will be sent: only its place in the history is lost
            self._rt["request"].inc()
            await self.r.xadd(self.keys.stream(n), {"k": "r", "c": conversation_id,
                                                    "b": _encode(WsHistoryItem("agent", result.text, now, agent_id=agent_id))})
        return result

    async def add_note(self, agent_id: str | None, conversation_id: str, text: str, tags: tuple[str, ...] = ()) -> Any:
        shop, _, buyer = conversation_id.partition(":")
        n = self.keys.shard(shop)
        owner = await self.r.hget(self.keys.owners(n), conversation_id)
        if agent_id is not None and (owner is None or owner.decode() != agent_id):
            raise NotYours(i18n._("conversation {cid!r} is not yours", cid=conversation_id))
        if self.pg is not None and text:
            await self.pg.add_note(shop, conversation_id, agent_id, text)
        return await self.set_profile(shop, buyer, add_tags=tags, note=text or None, author=agent_id)

    async def set_profile(self, shop_id: str, buyer_id: str, *, tags: list[str] | None = None,
                          add_tags: tuple[str, ...] = (), note: str | None = None, author: str | None = None) -> Any:
        if self.pg is None:
            return await super().set_profile(shop_id, buyer_id, tags=tags, add_tags=add_tags, note=note, author=author)
        return await self.pg.set_profile(shop_id, buyer_id, tags=tags, add_tags=add_tags, note=note, author=author)

    async def open_conversations(self) -> list[Conversation]:
        return await self.pg.open_conversations() if self.pg is not None else await super().open_conversations()

    async def mirrored_conversations(self, cids: list[str]) -> dict[str, Conversation]:
        """Open conversations by id from their shards' mirrors in Redis (one round trip), as every
        instance sees them, whichever routes them: the 售后 list's state and agent."""
        cids = [c for c in dict.fromkeys(cids) if c.partition(":")[0] in self.config.shops]
        if not cids:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for cid in cids:
            pipe.hget(self.keys.convs(self.keys.shard_of_conversation(cid)), cid)
        return {cid: _conversation.decode(raw) for cid, raw in zip(cids, await pipe.execute(), strict=True)
                if raw is not None}

    async def conversation_view(self, cid: str) -> ConversationView | None:
        """With PostgreSQL, any instance shows any open conversation: the mirror's state, the
        history and notes every instance wrote (the buyer and order only where it is routed)."""
        if self.pg is None:
            return await super().conversation_view(cid)
        found = await self.pg.conversation(cid)
        if found is None:
            return None
        conv, items, notes = found
        local = self.snapshot(cid)
        return ConversationView(conv, items, notes, local.buyer if local else None, local.order if local else None)

    async def order_context(self, items: list) -> None:
        rows: list[tuple] = []
        afters: list = []
        if self.pg is not None:
            await self.pg.records.record_story(items, time.time())
        self._process_context(_Job("context", (items,), None), rows, afters)
        if rows and self.pg is not None:
            for row in rows:
                await self.pg.records.save_orders(row[1])
        elif rows:
            from router.service.service import _write_rows

            await self.store.call(lambda c: _write_rows(c, rows))
        for after in afters:
            after({})

    async def reload(self, config: Config) -> list[Decision]:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._put(("reload", config, fut))
        return await fut

    # -- agents' sessions -------------------------------------------------------------------------

    async def attach(self, session: Any) -> Any:
        aid = session.agent_id
        handle = self._grace.pop(aid, None)
        if handle is not None:
            handle.cancel()
        last = await self.r.xrevrange(self.keys.to(aid), count=1)
        self._frame_last[aid] = last[0][0] if last else "0-0"
        old = self.sessions.get(aid)
        self.sessions[aid] = session
        self.metrics.ws_agents.set(len(self.sessions))
        pipe = self.r.pipeline(transaction=False)
        pipe.set(self.keys.conn(aid), self.id, px=3 * LEASE_MS)
        pipe.xadd(self.keys.control, {"type": "connected", "agent": aid, "by": self.id}, maxlen=10000, approximate=True)
        pipe.hget(self.keys.agent(aid), "status")
        status = (await pipe.execute())[2]
        if status in (None, b"offline"):
            await self._set_status(aid, "online")
        self.log.info("agent_connected", agent_id=aid)
        return old

    def detach(self, session: Any) -> None:
        aid = session.agent_id
        if self.sessions.get(aid) is not session:
            return
        del self.sessions[aid]
        self._frame_last.pop(aid, None)
        self.metrics.ws_agents.set(len(self.sessions))
        if not self._stopping:
            self._start_grace(aid)
        self.log.info("agent_disconnected", agent_id=aid)

    def _grace_over(self, agent_id: str) -> None:
        self._grace.pop(agent_id, None)
        if agent_id in self.sessions or self._stopping:
            return
        asyncio.get_running_loop().create_task(self._offline_unless_elsewhere(agent_id))

    async def _offline_unless_elsewhere(self, agent_id: str) -> None:
        with contextlib.suppress(RedisError):
            holder = await self.r.get(self.keys.conn(agent_id))
            if holder is None or holder.decode() == self.id:
                self.log.info("agent_grace_over", agent_id=agent_id)
                await self._set_status(agent_id, "offline")

    async def hello(self, agent_id: str) -> tuple[str, list[WsAssigned]]:
        """The agent's status and every conversation it holds, whichever instance routes them."""
        status = await self.r.hget(self.keys.agent(agent_id), "status")
        cids = sorted(c.decode() for c in await self.r.smembers(self.keys.held(agent_id)))
        pipe = self.r.pipeline(transaction=False)
        for cid in cids:
            pipe.hget(self.keys.convs(self.keys.shard_of_conversation(cid)), cid)
        snaps = []
        for cid, raw in zip(cids, await pipe.execute(), strict=True):
            if raw is None:
                continue
            conv = _conversation.decode(raw)
            history = (await self.pg.records.conversation(cid, conv.opened_at))[0] if self.pg is not None else []
            snaps.append(WsAssigned(cid, conv.shop_id, conv.buyer_id, conv.state, conv.skill, conv.priority,
                                    "message", conv.reserved_until, history=history))
        return (status or b"offline").decode(), snaps

    def _send(self, agent_id: str, frame: msgspec.Struct) -> None:
        """Frames go out in the commit, to the agent's stream, wherever it is connected."""
        if self._batch is not None:
            self._batch.frames.append((agent_id, _encode(frame)))

    # -- claims (called synchronously by the Dispatcher) ------------------------------------------

    def _claim(self, agent_id: str, conversation_id: str) -> bool:
        n = self.keys.shard_of_conversation(conversation_id)
        token = self._leases.get(n)
        acfg = self.config.agents.get(agent_id)
        if token is None or acfg is None:
            return False
        k = self.keys
        self._rt["claim"].inc()
        got = self._claim_lua(keys=[k.lease(n), k.agent(agent_id), k.owners(n), k.claims, k.held(agent_id)],
                              args=[token, agent_id, conversation_id, acfg.max_concurrent, self.id], client=self.rs)
        if got == -2:
            self._fenced = True
        elif got == -1:
            self.log.warning("claim_conflict", agent_id=agent_id, conversation_id=conversation_id)
        return got == 1

    def _release(self, agent_id: str, conversation_id: str, reason: str = "release") -> None:
        n = self.keys.shard_of_conversation(conversation_id)
        token = self._leases.get(n)
        if token is None:
            self._fenced = True
            return
        k = self.keys
        self._rt["release"].inc()
        got = self._release_lua(keys=[k.lease(n), k.agent(agent_id), k.owners(n), k.claims, k.held(agent_id)],
                                args=[token, agent_id, conversation_id, self.id, reason], client=self.rs)
        if got == -2:
            self._fenced = True

    # -- the consumer -------------------------------------------------------------------------------

    def _put(self, job: tuple[Any, ...]) -> None:
        self._jobs.put_nowait(job)
        self._wake.set()

    async def _consume(self) -> None:
        while not self._stopping:
            try:
                while not self._jobs.empty():
                    await self._run(self._jobs.get_nowait())
                if self._readable:
                    streams = {self.keys.stream(n): ">" for n in sorted(self._readable)}
                    self._rt["read"].inc()
                    res = await self.r.xreadgroup(GROUP, self.id, streams, count=BATCH, block=BLOCK_MS)
                    if res:
                        await self._route_entries(res)
                else:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(BLOCK_MS / 1000):
                            await self._wake.wait()
            except asyncio.CancelledError:
                raise
            except (RedisError, _Lost, OSError) as exc:
                await self._reset(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2)
            except Exception:  # routing must go on: the state is rebuilt from Redis
                self.log.exception("consumer_failed")
                await self._reset("consumer error")

    async def _run(self, job: tuple[Any, ...]) -> None:
        kind = job[0]
        if kind == "adopt":
            await self._adopt(job[1], job[2])
        elif kind == "lost":
            await self._reset(f"lease lost on shards {job[1]}")
        elif kind == "rebalance":
            self._rebalancing = False
            if len(self._leases) > job[1]:
                await self._reset(f"over the fair share of {job[1]} shards", keep=tuple(sorted(self._leases)[:job[1]]))
        elif kind == "tick":
            self._tick_queued = False
            batch = self._begin()
            self._clock = max(time.time(), self._clock)
            self._push(await self.router.advance(self._clock))
            await self._commit(batch)
        elif kind == "refresh":
            batch = self._begin()
            d = self.router.dispatcher
            for aid in job[1] or sorted(d.agents):
                self._push(d.refresh(aid))
            await self._commit(batch)
        elif kind == "control":
            batch = self._begin()
            for eid, fields in job[1]:
                await self._control(eid, fields)
            await self._commit(batch)
            if job[2]:
                self._claims_applied = job[2]
        elif kind == "reclaim":
            await self._reclaim()
        elif kind == "reload":
            _, config, fut = job
            try:
                batch = self._begin()
                moved = self.router.reload(config)
                self.config = config
                self._make_adapters()
                self._push(moved)
                await self._commit(batch)
            except BaseException as exc:
                if not fut.done():
                    fut.set_exception(exc)
                raise
            if not fut.done():
                fut.set_result(moved)

    def _begin(self) -> _Batch:
        self._batch = _Batch()
        self._fenced = False
        if self.pg is not None:
            self.pg.begin()
        return self._batch

    def _push(self, decisions: list[Decision], messages: dict[str, Message] | None = None) -> None:
        if self._batch is not None:
            self._batch.decisions.extend(decisions)
        super()._push(decisions, messages)

    async def _control(self, eid: bytes, fields: dict[bytes, bytes]) -> None:
        """One entry of ``control`` or of the claim log (``op``: a claim or release announces the
        agent's shared counters; ``claimed``/``freed`` on ``control`` are the same from an older
        version)."""
        kind = fields.get(b"type")
        agent = fields.get(b"agent", b"").decode()
        if agent not in self.router.dispatcher.agents:
            return
        op = fields.get(b"op")
        if op == b"claim":
            self._sync_shared_load(agent, fields.get(b"load"))
            if b"assigned" in fields:
                self._sync_counters(agent, int(fields[b"assigned"]), _claim_seq(eid))
        elif op == b"release":
            self._sync_shared_load(agent, fields.get(b"load"))
            self._push(self.router.dispatcher.refresh(agent))
        elif kind == b"status":
            self._clock = max(time.time(), self._clock)
            with contextlib.suppress(InputError):
                self._push(await self.router.handle_event(AgentStatusEvent(agent, fields[b"status"].decode())))  # type: ignore[arg-type]
        elif kind == b"freed":
            self._sync_shared_load(agent, fields.get(b"load"))
            self._push(self.router.dispatcher.refresh(agent))
        elif kind == b"claimed":
            self._sync_shared_load(agent, fields.get(b"load"))
            self._sync_counters(agent, int(fields[b"assigned"]), int(fields[b"seq"]))
        elif kind == b"connected" and fields.get(b"by", b"").decode() != self.id:
            session = self.sessions.get(agent)
            if session is not None and hasattr(session, "close"):
                self.log.info("agent_connected_elsewhere", agent_id=agent)
                asyncio.get_running_loop().create_task(session.close(4000, b"replaced by a new connection"))

    def _sync_shared_load(self, agent_id: str, load: bytes | None) -> None:
        """An announced load of the agent across all instances: what this router does not hold of
        it is held elsewhere, which ``least_load`` and availability add to the local load. The
        difference is exact once this instance has read the announcements of its own claims and
        releases; in between (a few milliseconds) it may be off by those, and a negative
        difference counts as 0. (No ``load``: an announcement from an older version.)"""
        d = self.router.dispatcher
        st = d.agents.get(agent_id)
        if load is None or st is None:
            return
        self._push(d.set_shared_load(agent_id, int(load) - st.load))

    def _sync_counters(self, agent_id: str, assigned: int, seq: int) -> None:
        """Adopt the shared counters the strategies' keys read, so round robin and weighted shares
        hold across instances. ``last_seq`` becomes the global claim sequence offset below zero:
        an assignment made here and not yet announced (a positive local sequence) still sorts as
        the most recent."""
        st = self.router.dispatcher.agents.get(agent_id)
        if st is None:
            return
        st.assigned = assigned
        st.last_seq = seq - SEQ_OFFSET
        self._push(self.router.dispatcher.refresh(agent_id))

    async def _route_entries(self, res: list) -> None:
        batch = self._begin()
        for stream, entries in res:
            n = int(stream.rsplit(b":", 1)[1])
            for eid, fields in entries:
                try:
                    await self._route_entry(n, eid, fields, batch)
                except (RedisError, _Lost, OSError):
                    raise
                except Exception as exc:  # one bad entry must not stop its shard
                    self.log.exception("entry_failed", shard=n, entry=eid.decode())
                    self._poisoned(fields, exc, batch)
        await self._commit(batch)

    async def _route_message(self, msg: Message) -> None:
        router = self.router
        self._clock = clock = max(time.time(), self._clock)
        self._push(await router.advance(clock))
        msg = self._enrich(msg)
        try:
            decisions = await router.handle_message(msg)
        except InputError as exc:
            decisions = [Decision(msg.msg_id, msg.shop_id, msg.conversation_id, "blocked", flags=[f"refused:{exc}"])]
        own = next((d for d in decisions if d.msg_id == msg.msg_id), None)
        self._remember_message(msg, own, clock)
        if msg.order is not None and msg.order.order_id:
            self.order_buyer[(msg.shop_id, msg.order.order_id)] = msg.buyer_id
        self._push(decisions, {msg.msg_id: msg})
        if self.pg is not None:
            self.pg.add_message(msg, clock, decisions)

    def _poisoned_message(self, msg: Message, exc: Exception) -> None:
        self._push([Decision(msg.msg_id, msg.shop_id, msg.conversation_id, "blocked", flags=[f"error:{type(exc).__name__}"])])

    def _poisoned(self, fields: dict[bytes, bytes] | None, exc: Exception, batch: _Batch) -> None:
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

    async def _route_entry(self, n: int, eid: bytes, fields: dict[bytes, bytes] | None, batch: _Batch) -> None:
        if n not in self._leases:
            return
        batch.acks.setdefault(n, []).append(eid)
        if not fields:
            return
        router = self.router
        kind = fields.get(b"k")
        if kind == b"M":
            batch.backlog[n] = batch.backlog.get(n, 0) + int(fields.get(b"n", 0))
            for msg in _messages.decode(fields[b"b"]):
                try:
                    await self._route_message(msg)
                except (RedisError, _Lost, OSError):
                    raise
                except Exception as exc:  # one bad message must not stop the others of its entry
                    self.log.exception("message_failed", shard=n, entry=eid.decode(), msg_id=msg.msg_id)
                    self._poisoned_message(msg, exc)
            return
        if kind == b"m":
            await self._route_message(_message.decode(fields[b"b"]))
            return
        if kind == b"r":  # an agent's reply through any instance, in order with the buyer's messages
            cid = fields[b"c"].decode()
            if cid in router.dispatcher.conversations:  # the history the next assigned frame carries
                self.history.setdefault(cid, deque(maxlen=HISTORY)).append(_history_item.decode(fields[b"b"]))
            return
        self._clock = max(time.time(), self._clock)
        self._push(await router.advance(self._clock))
        event = _event.decode(fields[b"b"])
        cid = getattr(event, "conversation_id", None)
        conv = router.dispatcher.conversations.get(cid or "")
        ok, reason, status, code = True, None, None, None
        refusal = self._refusal(event, conv, fields)
        if refusal is not None:
            ok = False
            reason, status, code = refusal
        else:
            closing = self.owner.get(cid or "") if isinstance(event, CloseEvent) else None
            try:
                moved = await router.handle_event(event)
            except InputError as exc:
                ok, reason, moved = False, exc.args[0] if len(exc.args) == 1 else str(exc), []
            if ok and isinstance(event, CloseEvent):
                if closing is not None:
                    self._send(closing, WsClosed(event.conversation_id))
                self.owner.pop(event.conversation_id, None)
                self._forget_conversation(event.conversation_id)
            if ok and isinstance(event, AcceptEvent):
                self.log.info("accepted", agent_id=event.agent_id, conversation_id=event.conversation_id)
            self._push(moved)
            if ok and self.pg is not None:
                self.pg.add("event", f"e:{n}:{eid.decode()}", self._clock, (cid or "").partition(":")[0] or None, None,
                            cid, fields[b"b"], moved)
        req = fields.get(b"req")
        inst = fields.get(b"inst")
        if req and inst:
            batch.results.append((inst.decode(), {"req": req.decode(), "ok": ok, "reason": i18n.portable(reason),
                                                  "status": status, "code": code}))

    def _refusal(self, event: Event, conv: Conversation | None,
                 fields: dict[bytes, bytes]) -> tuple[Any, int, str | None] | None:
        """Why the owner refuses a forwarded request, checked as the asking instance would check
        it locally (router/service/ws.py, ``POST /v1/conversations/{cid}/transfer``): the asker's scope
        (its shops, the agents it may move to), then the holder (an agent's socket acts on its own
        conversations; a supervisor over HTTP moves anyone's) and the target's shift. ``None``:
        go ahead (the router may still refuse)."""
        moving = isinstance(event, (CloseEvent, TransferEvent))
        cid = getattr(event, "conversation_id", "")
        raw = fields.get(b"as")
        if raw is None:  # an agent id only (an asker of an older version, or accept)
            who = fields.get(b"who", b"").decode()
            if not who or not moving or (conv is not None and conv.agent_id == who):
                return None
            return (i18n._("no open conversation {cid!r}", cid=cid) if conv is None
                    else i18n._("conversation {cid!r} is not yours", cid=cid)), 409, None
        asker = _requester.decode(raw)
        scope = asker.scope(self.config)
        http = asker.via == "http"
        if not scope.sees_conversation(cid):
            if http:
                shop = cid.partition(":")[0]
                return i18n._("forbidden: shop {shop!r} is not permitted to account {account!r}",
                              shop=shop, account=asker.account), 403, "shop_forbidden"
            return i18n._("forbidden: that shop is not permitted to your account"), 403, "shop_forbidden"
        to_agent = event.to_agent if isinstance(event, TransferEvent) else None
        if to_agent is not None and to_agent not in scope.visible_agents():
            return i18n._("unknown agent {agent!r}", agent=to_agent), 404, "unknown_agent"
        if not moving:
            return None
        if conv is None:
            return i18n._("no open conversation {cid!r}", cid=cid), 404, None
        if http and not scope.is_supervisor and (scope.agent_id is None or conv.agent_id != scope.agent_id):
            return i18n._("forbidden: conversation {cid!r} is not yours, and moving others' needs a supervisor",
                          cid=cid), 403, None
        if not http and conv.agent_id != scope.agent_id:
            return i18n._("conversation {cid!r} is not yours", cid=cid), 403, None
        target = self.router.dispatcher.agents.get(to_agent or "")
        if http and target is not None and not target.in_shift:
            return i18n._("agent {agent!r} is off shift", agent=to_agent), 409, "agent_off_shift"
        return None

    async def _commit(self, batch: _Batch) -> None:
        """Write the batch in one fenced Lua call; a lost lease drops the local state."""
        self._batch = None
        bind_message(None)
        if self._fenced:
            raise _Lost("a claim or release was fenced")
        if self.pg is not None:  # the records first: what Redis acknowledges is in PostgreSQL
            await self.pg.before_commit()
        k = self.keys
        keys: list[str] = []
        index: dict[str, int] = {}

        def ki(name: str) -> int:
            i = index.get(name)
            if i is None:
                keys.append(name)
                i = index[name] = len(keys)
            return i

        sets: dict[int, list[str]] = {}
        written: dict[str, int] = {}
        for cid, conv in self.router.dispatcher.conversations.items():
            if self._mirrored.get(cid) != conv.version:
                sets.setdefault(ki(k.convs(k.shard(conv.shop_id))), []).extend((cid, _encode(conv).decode()))
                written[cid] = conv.version
        gone = [cid for cid in self._mirrored if cid not in self.router.dispatcher.conversations]
        dels: dict[int, list[str]] = {}
        last_agent = self.router.dispatcher.last_agent
        for cid in gone:
            n = k.shard_of_conversation(cid)
            dels.setdefault(ki(k.convs(n)), []).append(cid)
            if (last := last_agent.get(cid)) is not None:
                sets.setdefault(ki(k.last(n)), []).extend((cid, f"{last[0]} {last[1]}"))
        adds = []
        if batch.decisions:
            adds.append([ki(k.decisions), DECISIONS_MAX,
                         _encode({"ds": batch.decisions, "by": self.id, "ts": time.time()}).decode(), 0])
        frames: dict[str, list[bytes]] = {}
        for agent, frame in batch.frames:
            frames.setdefault(agent, []).append(frame)
        for agent, group in frames.items():
            adds.append([ki(k.to(agent)), AGENT_STREAM_MAX, b"\n".join(group).decode(), 0])
        for inst, res in batch.results:
            adds.append([ki(k.replies(inst)), AGENT_STREAM_MAX, _encode(res).decode(), REPLIES_TTL_MS])
        acks = [[ki(k.stream(n)), GROUP, [e.decode() for e in ids]] for n, ids in batch.acks.items() if ids]
        backlog = [[ki(k.backlog(n)), count] for n, count in batch.backlog.items() if count]
        if not (sets or dels or adds or acks):
            return
        fence = [[ki(k.lease(n)), token] for n, token in sorted(self._leases.items())]
        payload = _encode({"fence": fence, "ack": acks, "backlog": backlog, "set": list(sets.items()),
                           "del": list(dels.items()), "add": adds})
        self._rt["commit"].inc()
        ok = await self._commit_lua(keys=keys, args=[payload])
        if not ok:
            raise _Lost("commit fenced")
        if self.pg is not None:
            await self.pg.after_commit(batch.decisions)
        self._mirrored.update(written)
        for cid in gone:
            self._mirrored.pop(cid, None)

    async def _reset(self, reason: str, keep: tuple[int, ...] = ()) -> None:
        """Drop every shard and all local routing state; leases are given back so the shards are
        adopted again (by us or another instance) from what Redis holds. Shards in ``keep``
        (a rebalance, between two committed batches) keep their lease and are adopted again."""
        (self.log.info if keep else self.log.error)("shards_dropped", reason=reason, shards=sorted(self._leases),
                                                    kept=list(keep))
        leases, self._leases = dict(self._leases), {}
        self._readable.clear()
        self._batch = None
        self._fenced = False
        with contextlib.suppress(RedisError, OSError):
            for n, token in leases.items():
                if n not in keep:
                    await self._unlease(keys=[self.keys.lease(n)], args=[token])
        self.router = self._new_router(self.config)
        self._mirrored.clear()
        self.owner.clear()
        self.history.clear()
        self.context.clear()
        self.waiting_since.clear()
        with contextlib.suppress(RedisError, OSError):
            await self._load_statuses()
        for n in keep:
            self._leases[n] = leases[n]
            self._put(("adopt", n, leases[n]))

    # -- taking over a shard --------------------------------------------------------------------------

    async def _adopt(self, n: int, token: str) -> None:
        """Rebuild the shard's conversations from the mirror, give back claims no committed state
        explains (made by an owner that died before its commit) and claim again for a mirrored
        agent whose release was not committed (or queue the conversation if that agent is now
        full), then route the entries the old owner left pending, oldest first, and drain."""
        if self._leases.get(n) != token or n in self._readable:
            return
        k = self.keys
        stream = k.stream(n)
        pending: list = []
        start: bytes | str = "0-0"
        while True:
            res = await self.r.xautoclaim(stream, GROUP, self.id, 0, start, count=1000)
            start = res[0]
            pending.extend(res[1])
            if start in (b"0-0", "0-0"):
                break
        convs, owners, lasts = await self.r.pipeline(transaction=False).hgetall(k.convs(n)).hgetall(k.owners(n)) \
            .hgetall(k.last(n)).execute()
        mirror = {cid.decode(): _conversation.decode(raw) for cid, raw in convs.items()}
        loaded = await self._load_histories(mirror, pending)
        d = self.router.dispatcher
        self._clock = max(time.time(), self._clock)
        d.advance(self._clock)
        for cid_b, last_b in lasts.items():
            agent, _, ts = last_b.decode().partition(" ")
            d.last_agent.setdefault(cid_b.decode(), (agent, float(ts)))
        orphans = 0
        for cid_b, agent_b in owners.items():
            cid, agent = cid_b.decode(), agent_b.decode()
            conv = mirror.get(cid)
            if conv is None or conv.agent_id != agent or conv.state not in ("assigned", "reserved"):
                self._release(agent, cid, "orphan")
                orphans += 1
        held = {c.decode(): a.decode() for c, a in owners.items()}
        for conv in sorted(mirror.values(), key=lambda c: c.seq):
            if conv.state in ("assigned", "reserved") and held.get(conv.id) != conv.agent_id \
                    and not self._claim(conv.agent_id or "", conv.id):
                conv.state = "queued"
                conv.agent_id = None
                conv.queued_at = conv.queued_at or self._clock
                conv.version += 1
            elif conv.state == "bot":
                conv.agent_id = None
            st = d.agents.get(conv.agent_id or "")
            if st is not None and conv.state in ("assigned", "reserved") and held.get(conv.id) == conv.agent_id:
                # a claim counted so far in the load the agent carries elsewhere becomes ours
                # (d.adopt re-keys the agent)
                st.shared_load = max(0, st.shared_load - 1)
            d.adopt(conv)
            self._mirrored[conv.id] = conv.version
            if conv.agent_id is not None:
                self.owner[conv.id] = conv.agent_id
        for cid, items in loaded.items():
            self.history[cid] = deque(items, maxlen=HISTORY)
        if self._fenced:
            raise _Lost("fenced while adopting")
        self._readable.add(n)
        self.log.info("shard_adopted", shard=n, conversations=len(mirror), pending=len(pending), orphans=orphans)
        batch = self._begin()
        for eid, fields in pending:
            await self._route_entry(n, eid, fields, batch)
        for aid in sorted(d.agents):
            self._push(d.refresh(aid))
        await self._commit(batch)

    async def _load_histories(self, mirror: dict[str, Conversation], pending: list) -> dict[str, list[WsHistoryItem]]:
        """The history of the shard's open conversations from the records store (PostgreSQL; the
        SQLite records are the old owner's own file), so ``assigned`` frames after a takeover carry
        it. The old owner's pending entries are left out: they are routed again here and added then."""
        if self.pg is None or not mirror:
            return {}
        entries: list[str] = []
        replies: set[tuple[str, float]] = set()
        for _eid, fields in pending:
            kind = (fields or {}).get(b"k")
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                if kind in (b"M", b"m"):
                    msgs = _messages.decode(fields[b"b"]) if kind == b"M" else [_message.decode(fields[b"b"])]
                    entries.extend(f"m:{m.shop_id}:{m.msg_id}" for m in msgs)
                elif kind == b"r":
                    replies.add((fields[b"c"].decode(), _history_item.decode(fields[b"b"]).ts))
        return await self.pg.records.histories({cid: conv.opened_at for cid, conv in mirror.items()},
                                               skip_entries=entries, skip_replies=replies, limit=HISTORY)

    async def _reclaim(self) -> None:
        """Entries of our shards left pending on another consumer (read by an owner that had just
        lost its lease) are routed here after a lease period of idleness."""
        batch = self._begin()
        for n in sorted(self._readable):
            res = await self.r.xautoclaim(self.keys.stream(n), GROUP, self.id, LEASE_MS, "0-0", count=BATCH)
            for eid, fields in res[1]:
                await self._route_entry(n, eid, fields, batch)
        await self._commit(batch)

    # -- background loops ----------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        started = time.monotonic()
        last_refresh = time.monotonic()
        rounds = 0
        while not self._stopping:
            try:
                await self._lease_round(settled=time.monotonic() - started >= SETTLE_S)
                rounds += 1
                if time.monotonic() - last_refresh >= REFRESH_S:
                    last_refresh = time.monotonic()
                    self._put(("refresh", None))
                    if rounds % 5 == 0:
                        self._put(("reclaim",))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.log.warning("lease_round_failed", error=str(exc))
            await asyncio.sleep(RENEW_S)

    async def _lease_round(self, settled: bool) -> None:
        k = self.keys
        now_ms = int(time.time() * 1000)
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(k.instances, {self.id: now_ms + LEASE_MS})
        pipe.zremrangebyscore(k.instances, 0, now_ms)
        pipe.zcard(k.instances)
        for aid in self.sessions:
            pipe.set(k.conn(aid), self.id, px=3 * LEASE_MS)
        self._rt["lease"].inc()
        live = (await pipe.execute())[2]
        if self._leases:
            held = sorted(self._leases.items())
            self._rt["lease"].inc()
            res = await self._renew(keys=[k.lease(n) for n, _ in held], args=[LEASE_MS, *(t for _, t in held)])
            lost = [n for (n, _), ok in zip(held, res, strict=True) if not ok]
            if lost:
                self._put(("lost", lost))
                return
        if not settled:
            return
        fair = math.ceil(k.shards / max(1, live))
        if len(self._leases) > fair and not self._rebalancing:
            self._rebalancing = True
            self._put(("rebalance", fair))
        if len(self._leases) < fair:
            offset = int(self.id.encode().hex(), 16) % k.shards
            for i in range(k.shards):
                n = (offset + i) % k.shards
                if n in self._leases:
                    continue
                self._lease_seq += 1
                token = f"{self.id}:{self._lease_seq}"
                self._rt["lease"].inc()
                if await self.r.set(k.lease(n), token, nx=True, px=LEASE_MS):
                    self._leases[n] = token
                    self._put(("adopt", n, token))
                    if len(self._leases) >= fair:
                        break
        await self._sweep_offline()

    async def _sweep_offline(self) -> None:
        """Agents whose WebSocket instance died: offline once no instance has held their
        connection for the reconnect grace."""
        agents = [aid for aid, st in self.router.dispatcher.agents.items() if st.status != "offline"]
        if not agents:
            return
        self._rt["lease"].inc()
        holders = await self.r.mget([self.keys.conn(a) for a in agents])
        now = time.time()
        grace = self.config.main.server.reconnect_grace_s
        for aid, holder in zip(agents, holders, strict=True):
            if holder is not None or aid in self.sessions or aid in self._grace:
                self._missing_since.pop(aid, None)
                continue
            since = self._missing_since.setdefault(aid, now)
            if now - since >= grace:
                self._missing_since.pop(aid, None)
                self.log.info("agent_connection_lost", agent_id=aid)
                await self._set_status(aid, "offline")

    async def _control_loop(self) -> None:
        while not self._stopping:
            try:
                self._rt["control"].inc()
                res = await self.r.xread({self.keys.control: self._control_last, self.keys.claims: self._claims_last},
                                         count=500, block=1000)
                for key, entries in res or ():
                    if key.decode() == self.keys.claims:
                        self._claims_last = entries[-1][0]
                        self._put(("control", entries, entries[-1][0]))
                    else:
                        self._control_last = entries[-1][0]
                        self._put(("control", entries, None))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.log.warning("control_read_failed", error=str(exc))
                await asyncio.sleep(0.5)

    async def _frames_loop(self) -> None:
        """Deliver frames from the agents' streams to the WebSockets held here, and requests'
        verdicts to their waiting callers."""
        k = self.keys
        mine = k.replies(self.id)
        while not self._stopping:
            streams: dict[str, bytes | str] = {mine: self._reply_last}
            for aid in list(self.sessions):
                if aid in self._frame_last:
                    streams[k.to(aid)] = self._frame_last[aid]
            try:
                self._rt["frames"].inc()
                res = await self.r.xread(streams, count=500, block=100)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.log.warning("frames_read_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            for key, entries in res or ():
                key = key.decode()
                if key == mine:
                    self._reply_last = entries[-1][0]
                    for _, fields in entries:
                        res_ = msgspec.json.decode(fields[b"d"])
                        fut = self._waiting.get(res_["req"])
                        if fut is not None and not fut.done():
                            fut.set_result((res_["ok"], i18n.revive(res_["reason"]),  # the asker translates
                                            res_.get("status"), res_.get("code")))
                    continue
                aid = key.rsplit(":", 1)[1]
                if aid not in self._frame_last:
                    continue
                self._frame_last[aid] = entries[-1][0]
                session = self.sessions.get(aid)
                relay = getattr(session, "deliver_encoded", None)
                if relay is not None:
                    for _, fields in entries:
                        for frame in fields[b"d"].split(b"\n"):
                            relay(frame)

    async def _tick_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(TICK_S)
            if not self._tick_queued:
                self._tick_queued = True
                self._put(("tick",))


def _claim_seq(raw: bytes) -> int:
    """A claim's place in the global claim order: its claim log entry id (``ms-n``, stored as the
    agent's ``seq``) as one increasing integer; a plain integer is a sequence number of an older
    version, which sorts before every entry id."""
    ms, _, n = raw.partition(b"-")
    return (int(ms) << 20) + int(n) if n else int(ms)


__all__ = ["RedisService", "Unavailable"]
