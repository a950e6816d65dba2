"""The router loop of one instance: one consumer task feeds the router from one queue (ingest
batches, agents' events, replies, order news, clock ticks, reloads), so router calls never
overlap. It routes a batch in memory, hands the journal rows to :class:`router.service.journal.Journal`
and goes on with the next batch; each job's caller is answered after its commit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import structlog

from adapters import OutboundReply
from router.core import i18n
from router.core.models import AcceptEvent, AgentStatusEvent, CloseEvent, Decision, Message, WsHistoryItem
from router.core.pipeline import InputError
from router.core.runtime import Pacer
from router.service.errors import NotYours
from router.service.journal import load_side_tables
from router.storage.replies import add_violations

if TYPE_CHECKING:
    from router.service.service import Service

log = structlog.get_logger("fenliu.service")

_encode = msgspec.json.Encoder().encode

TICK_S = 0.2
BATCH = 32
#: Routing time one step of the consumer aims at: the jobs it takes at once are sized from the
#: cost of the last steps, so a backlog of expensive jobs (the demo's rules: up to 1 ms a message
#: under load) is not routed 32 at a time in one 10–30 ms callback that every answer waits behind.
STEP_S = 0.004


@dataclass
class IngestResult:
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


class Job:
    __slots__ = ("kind", "args", "future")

    def __init__(self, kind: str, args: tuple, future: asyncio.Future | None = None) -> None:
        self.kind = kind
        self.args = args
        self.future = future

    @property
    def waiter(self) -> asyncio.Future | None:
        """The future the job's caller awaits (an event job carries it as its last argument)."""
        return self.future or (self.args[-1] if self.kind == "event" else None)


class After:
    """A post-commit callback that can also fail its callers' futures when the commit fails."""

    __slots__ = ("fn", "futures")

    def __init__(self, fn: Callable[[dict[int, int]], None], *futures: asyncio.Future | None) -> None:
        self.fn = fn
        self.futures = futures

    def __call__(self, ids: dict[int, int]) -> None:
        self.fn(ids)

    def fail(self, error: BaseException) -> None:
        for future in self.futures:
            if future is not None and not future.done():
                future.set_exception(error)


class RouterLoop:
    """The consumer, the clock and the start of one instance with its own journal."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self._tick_pending = False
        self._job_s = 0.0  # the cost of a job, averaged over the last steps
        self.pacer = Pacer()

    # -- life cycle (called by the Service) ---------------------------------------------------------

    async def open(self) -> None:
        """Open the store, replay the journal, load what lives beside it, start the writer."""
        from router.storage.accounts import token_key

        s = self.service
        s.store.start()
        s.token_key = await s.store.call(token_key)
        self.replayed = await s.journal.replay()
        await load_side_tables(s)
        await s.journal.writer.start()

    def tasks(self) -> list[asyncio.Task]:
        return [asyncio.create_task(self._consume(), name="fenliu-consumer"),
                asyncio.create_task(self._ticker(), name="fenliu-ticker"),
                asyncio.create_task(self.pacer.run(), name="fenliu-gc")]

    def started(self) -> None:
        s = self.service
        if s.journal.seq == 0:  # a new store: agents start offline
            for aid, st in sorted(s.router.dispatcher.agents.items()):
                if st.status != "offline":
                    self.offline(aid)
        else:
            for aid, st in s.router.dispatcher.agents.items():
                if st.status != "offline":
                    s.desk.start_grace(aid)
        self.pacer.start()  # requests wait behind each collection: short ones, between callbacks
        log.info("service_started", snapshot=s.journal.snapshot_seq, replayed=self.replayed, seq=s.journal.seq,
                 store=str(s.store.path))

    async def drain(self, consumer: asyncio.Task | None) -> None:
        """Route what is queued and commit it."""
        self.queue.put_nowait(None)
        if consumer is not None:
            try:
                await consumer
            except asyncio.CancelledError:
                pass

    async def close(self) -> None:
        s = self.service
        await s.journal.close()
        await s.store.close()
        log.info("service_stopped", seq=s.journal.seq)

    def offline(self, agent_id: str) -> None:
        self.enqueue(Job("event", (AgentStatusEvent(agent_id, "offline"), None)))

    def enqueue(self, job: Job) -> None:
        if self.service.failed is not None and job.kind != "tick":
            raise self.service.refusal()
        self.queue.put_nowait(job)

    # -- the consumer -------------------------------------------------------------------------------

    async def _consume(self) -> None:
        queue = self.queue
        s = self.service
        clock = time.perf_counter
        while True:
            job = await queue.get()
            batch: list[Job] = []
            stop = job is None
            if job is not None:
                batch.append(job)
            limit = min(BATCH, max(1, int(STEP_S / self._job_s))) if self._job_s else BATCH
            while len(batch) < limit and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    stop = True
                    continue
                batch.append(nxt)
            if batch and s.failed is not None:
                self._refuse(batch)
            elif batch:
                started = clock()
                rows: list[tuple] = []
                afters: list[Callable[[dict[int, int]], None]] = []
                i = 0
                while i < len(batch):
                    j = batch[i]
                    if j.kind == "messages":  # a run of ingest jobs: one after-commit callback for all
                        k = i + 1
                        while k < len(batch) and batch[k].kind == "messages":
                            k += 1
                        await self._process_messages(batch[i:k], rows, afters)
                        i = k
                        continue
                    i += 1
                    try:
                        await self._process(j, rows, afters)
                    except Exception as exc:  # noqa: BLE001 - one bad job must not stop routing
                        log.exception("job_failed", kind=j.kind)
                        fut = j.waiter
                        if fut is not None and not fut.done():
                            fut.set_exception(exc)
                s.journal.commit(rows, afters)
                self._job_s += ((clock() - started) / len(batch) - self._job_s) / 4
                every = s.config.main.storage.snapshot_every
                if every and s.journal.seq - s.journal.snapshot_seq >= every:
                    await s.journal.snapshot()
                # The hooks are synchronous and ``queue.get()`` does not suspend while jobs wait,
                # so without this the consumer drained a whole backlog in one step: the callers
                # whose commits were done (woken behind it) waited for all of it before their
                # ``202``, while their agents had long been told (bench_latency.py).
                await asyncio.sleep(0)
            if stop:
                if s.config.main.storage.snapshot_every:
                    await s.journal.snapshot(wait=True)  # the next start replays nothing
                await s.journal.writer.flush()
                return

    def _refuse(self, jobs: list[Job]) -> None:
        """Jobs queued before the journal failed are not routed: the state they would build on
        is already ahead of the store."""
        refused = self.service.refusal()
        for job in jobs:
            if job.kind == "messages":
                self.service.pending_ingest -= len(job.args[0])
            fut = job.waiter
            if fut is not None and not fut.done():
                fut.set_exception(refused)

    async def _advance(self, rows: list[tuple]) -> list[Decision]:
        """Set the clock for the next input and run due timers; journal a tick if it moved
        anything, or if it is the router's first clock value."""
        s = self.service
        s.clock = now = max(time.time(), s.clock)
        first = s.router.dispatcher.now is None
        moved = await s.router.advance(now)
        if moved or first:
            rows.append(("tick", s.journal.next_seq(), now, None, None, None, None, moved))
        return moved

    async def _process(self, job: Job, rows: list[tuple], afters: list) -> None:
        kind = job.kind  # ingest jobs ("messages") are routed in runs by _consume
        s = self.service
        if kind == "event":
            await self._process_event(job, rows, afters)
        elif kind == "tick":
            self._tick_pending = False
            moved = await self._advance(rows)
            if moved:
                afters.append(After(lambda ids, m=moved: s.desk.push(m)))
        elif kind == "reply":
            await self._process_reply(job, rows, afters)
        elif kind == "context":
            (items,) = job.args
            writes, pushes = s.buyers.apply_context(items, s.clock)
            if writes:
                rows.append(("orders", writes))
            fut = job.future

            def told(ids: dict[int, int]) -> None:
                s.desk.tell_context(pushes)
                if fut is not None and not fut.done():
                    fut.set_result(None)

            afters.append(After(told, fut))
        elif kind == "reload":
            config, s.journal.fingerprint = job.args
            moved = await self._advance(rows)
            changed = s.router.reload(config)
            s.config = config
            s.make_adapters()
            if changed:
                rows.append(("tick", s.journal.next_seq(), s.clock, None, None, None, None, changed))
            fut = job.future

            def after(ids: dict[int, int], m=moved + changed) -> None:
                s.desk.push(m)
                for aid in s.desk.absent():
                    self.offline(aid)
                if fut is not None and not fut.done():
                    fut.set_result(m)

            afters.append(After(after, fut))

    async def _process_messages(self, jobs: list[Job], rows: list[tuple], afters: list) -> None:
        """Route the messages of consecutive ingest jobs at one clock value; one after-commit
        callback tells agents and resolves every job's future (per job, it cost more than routing
        a short message).
        A job that fails unexpectedly gets the exception; the others go on."""
        s = self.service
        pushed: list[Decision] = []
        seen: list[tuple[Message, Decision | None, float, str]] = []
        answers: list[tuple[asyncio.Future | None, IngestResult]] = []
        router, journal, enrich = s.router, s.journal, s.buyers.enrich
        ids = router.seen
        assert ids is not None
        count, metrics = s.metrics.count, s.metrics
        advanced = False
        for job in jobs:
            (messages,) = job.args
            result = IngestResult()
            accepted = result.accepted
            try:
                # One clock value for the run's messages (they were all queued when the step
                # began): the timers run once per step, not once per message or request (an
                # advance per request was ≈ 2.5 % of the loop under single-message load).
                if not advanced:
                    moved = await self._advance(rows)
                    advanced = True
                    if moved:
                        pushed.extend(moved)
                clock = s.clock
                for i, msg in enumerate(messages):
                    if ids.maybe_seen_long_ago(msg.shop_id, msg.msg_id) and await journal.journaled_before(msg):
                        result.duplicates.append(msg.msg_id)
                        count(metrics.duplicates, msg.shop_id)
                        continue
                    msg = enrich(msg)
                    try:
                        decisions = await router.handle_message(msg)
                    except InputError as exc:
                        result.errors.append((i, str(exc)))
                        continue
                    msg_id = msg.msg_id
                    own = None
                    for d in decisions:
                        if d.msg_id == msg_id:
                            own = d
                            break
                    if own is not None and own.action == "duplicate":
                        result.duplicates.append(msg_id)
                        count(metrics.duplicates, msg.shop_id)
                        continue
                    shop_id, cid = msg.shop_id, msg.conversation_id
                    if router.dropped:  # the entry just before its message, in the same commit
                        rows.append(("faults", journal.next_seq(), clock, shop_id, msg_id, cid,
                                     _encode(router.dropped), ()))
                    rows.append(("message", journal.next_seq(), clock, shop_id, msg_id, cid, _encode(msg), decisions))
                    accepted.append(msg_id)
                    count(metrics.messages, shop_id)
                    pushed += decisions
                    seen.append((msg, own, clock, cid))
            except Exception as exc:  # noqa: BLE001 - one bad job must not stop routing
                log.exception("job_failed", kind="messages")
                if job.future is not None and not job.future.done():
                    job.future.set_exception(exc)
                continue
            finally:
                s.pending_ingest -= len(messages)
            answers.append((job.future, result))

        def after(ids: dict[int, int]) -> None:
            remember = s.memory.remember_message
            for msg, own, clock, cid in seen:
                remember(msg, own, clock, cid)
            s.desk.push(pushed, {m.msg_id: m for m, _, _, _ in seen})
            for fut, result in answers:
                if fut is not None and not fut.done():
                    fut.set_result(result)

        afters.append(After(after, *(fut for fut, _ in answers)))
        orders = s.buyers.orders_of(seen)
        if orders:
            rows.append(("orders", orders))

    async def _process_event(self, job: Job, rows: list[tuple], afters: list) -> None:
        s = self.service
        event, fut = job.args
        s.clock = now = max(time.time(), s.clock)
        first = s.router.dispatcher.now is None
        moved = await s.router.advance(now)
        closing = s.memory.owner.get(event.conversation_id) if isinstance(event, CloseEvent) else None
        try:
            decisions = await s.router.handle_event(event)
        except InputError as exc:
            if moved or first:
                rows.append(("tick", s.journal.next_seq(), now, None, None, None, None, moved))
            afters.append(After(lambda ids: s.desk.push(moved)))
            if fut is not None and not fut.done():
                fut.set_exception(exc)
            return
        cid = getattr(event, "conversation_id", None)
        shop_id = cid.split(":", 1)[0] if cid else None
        rows.append(("event", s.journal.next_seq(), now, shop_id, None, cid, _encode(event), moved + decisions))

        def after(ids: dict[int, int]) -> None:
            if isinstance(event, CloseEvent):
                s.desk.closed(event.conversation_id, closing)
            s.desk.push(moved + decisions)
            if isinstance(event, AcceptEvent):
                structlog.get_logger("fenliu.service").info(
                    "accepted", agent_id=event.agent_id, conversation_id=event.conversation_id)
            if fut is not None and not fut.done():
                fut.set_result(moved + decisions)

        afters.append(After(after, fut))

    async def _process_reply(self, job: Job, rows: list[tuple], afters: list) -> None:
        s = self.service
        agent_id, cid, text = job.args
        fut = job.future
        conv = s.router.dispatcher.conversations.get(cid)
        if conv is None or conv.agent_id != agent_id:
            fut.set_exception(NotYours(i18n._("conversation {cid!r} is not yours", cid=cid)))
            return
        if conv.state == "reserved":
            fut.set_exception(NotYours(i18n._("accept conversation {cid!r} before replying", cid=cid)))
            return
        s.clock = max(time.time(), s.clock)
        result = await s.router.check_reply(conv.shop_id, text, cid, agent_id)
        if not result.ok:
            s.metrics.replies.labels("refused").inc()
            log.info("reply_refused", agent_id=agent_id, conversation_id=cid, shop_id=conv.shop_id,
                     reason=result.reason, words=[h.word for h in result.hits])
            if result.hits:  # the raw material of quality inspection (fenliu stats: violations)
                found = [(time.time(), conv.shop_id, cid, agent_id, h.word, h.tag or "", h.source) for h in result.hits]
                s.store.submit(lambda conn: add_violations(conn, found))
            fut.set_result(result)
            return
        now = s.clock
        index = len(rows)
        rows.append(("reply", conv.shop_id, cid, conv.buyer_id, agent_id, result.text, now))

        def after(ids: dict[int, int]) -> None:
            rid = ids.get(index)
            s.metrics.replies.labels("sent").inc()
            since = s.memory.waiting_since.pop(cid, None)
            if since is not None:
                s.metrics.reply_latency.observe(max(0.0, now - since))
            s.memory.add(cid, WsHistoryItem("agent", result.text, now, agent_id=agent_id))
            if rid is not None:
                s.outbox.queue(OutboundReply(rid, conv.shop_id, cid, conv.buyer_id, result.text, now, agent_id), now, 0)
            if not fut.done():
                fut.set_result(result)

        afters.append(After(after, fut))

    # -- the clock ---------------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            if not self._tick_pending:
                self._tick_pending = True
                self.enqueue(Job("tick", ()))
