"""The running service behind ``fenliu serve``: one router, one store, agents' sessions.

Why it is shaped this way:

- **One consumer task feeds the router** from one queue (ingest batches, agents' events, replies,
  clock ticks, reloads), so router calls never overlap. Ingest is bounded by a count of messages
  waiting (``server.ingest_queue_max``): past it the HTTP layer answers ``503``.
- **Journal, then acknowledge.** The consumer routes a batch of jobs in memory, hands the journal
  rows (each input with its clock value and decisions) to the journal writer process
  (:mod:`router.storage.writer`), and goes on routing the next batch while the commit runs. Only when the commit is done are the HTTP callers
  answered and the agents told, so nothing acknowledged or shown can be lost by a crash.
- **Recovery is replay.** The router is deterministic given its inputs and clock values, so on
  start a fresh router replays the journal with the recorded clock. Inputs that only advanced
  the clock without moving anything are not journaled: firing the same timers at the next
  journaled input gives the same state (the first clock value is always journaled).
- **Buyer profiles** (客户标签, 备注) and order context from platform pushes are merged into each
  new message before it is routed *and journaled*, so replay does not depend on profiles that
  changed since.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import msgspec
import structlog

from adapters import Adapter, OrderContext, OutboundReply, adapter_class, deliver_once
from router.core.config import Config
from router.storage import snapshot
from router.storage import story
from router.core.dedupe import SeenIds
from router.core import i18n
from router.service.metrics import Metrics
from router.service.reload import Reloader
from router.core.runtime import tune_gc
from router.storage.writer import JournalWriter, flat_rows, write_rows
from router.core.models import (
    AcceptEvent,
    AgentStatusEvent,
    Buyer,
    CloseEvent,
    Conversation,
    Decision,
    Event,
    Message,
    Order,
    OutboundResult,
    ServiceSnapshot,
    WsAssigned,
    WsClosed,
    WsContext,
    WsHistoryItem,
    WsMessage,
    WsTransferred,
)
from router.service.errors import JournalFailed, NotYours, Overloaded
from router.service.lifecycle import IdleCloser
from router.core.pipeline import InputError, Router
from router.storage.records import Records, SqliteRecords
from router.storage.store import Store, journal_page, last_seq, read_only

log = structlog.get_logger("fenliu.service")

_encode = msgspec.json.Encoder().encode
_message = msgspec.json.Decoder(Message)
_event = msgspec.json.Decoder(Event)
_dropped = msgspec.json.Decoder(list[tuple[str, str]])
_service_snapshot = msgspec.msgpack.Decoder(ServiceSnapshot)
_order = msgspec.json.Decoder(Order)

HISTORY = 50
TICK_S = 0.2
BATCH = 32


class Session(Protocol):
    """Where an agent's frames go: a WebSocket, or a simulated agent in-process."""

    agent_id: str

    def deliver(self, frame: msgspec.Struct) -> None: ...


@dataclass
class Profile:
    tags: list[str] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)


class ConversationView(NamedTuple):
    """An open conversation as ``GET /v1/conversations/{id}`` shows it."""

    conversation: Conversation
    history: list[WsHistoryItem]
    notes: list[dict[str, Any]]
    buyer: Buyer | None
    order: Order | None


@dataclass
class IngestResult:
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


class _Job:
    __slots__ = ("kind", "args", "future")

    def __init__(self, kind: str, args: tuple, future: asyncio.Future | None = None) -> None:
        self.kind = kind
        self.args = args
        self.future = future

    @property
    def waiter(self) -> asyncio.Future | None:
        """The future the job's caller awaits (an event job carries it as its last argument)."""
        return self.future or (self.args[-1] if self.kind == "event" else None)


class Service:
    """Everything ``serve`` runs, minus HTTP: see :mod:`router.service.server` for the endpoints."""

    def __init__(self, config: Config, *, store_path: str | Path | None = None, simulate: bool = False) -> None:
        self.config = config
        self.simulate = simulate
        self.store = Store(store_path or config.main.storage.path)
        #: Accounts, figures and (with PostgreSQL) the other records: router/storage/records.py.
        self.records: Records = SqliteRecords(self.store)
        self.writer = JournalWriter(self.store.path, on_exit=self._writer_failed,
                                    on_transaction=lambda: self.metrics.commits.inc())
        #: Why the service can no longer work (``/healthz`` answers 503 with it), or ``None``.
        self.failed: str | None = None
        self._clock = time.time()
        self.router = Router(config, reservations=True, clock=lambda: self._clock,
                             dedupe=SeenIds(config.main.server.dedupe_window, keep_evicted=True))
        self._lookup: sqlite3.Connection | None = None
        self._fingerprint = ""
        self._snapshot_seq = 0  # the journal entry the newest snapshot includes
        self.metrics = Metrics(lambda: self.router)
        self.metrics.ingest_queue.set_function(lambda: self.pending_ingest)
        self.reloader = Reloader(config.dir, self._apply_reload, extra=config.plugins.extra,
                                 on_failure=lambda _result: self.metrics.reload_failures.inc(),
                                 current=lambda: self.config)
        self.sessions: dict[str, Session] = {}
        self.owner: dict[str, str] = {}
        self.history: dict[str, deque[WsHistoryItem]] = {}
        self.context: dict[str, tuple[Buyer | None, Order | None]] = {}
        self.waiting_since: dict[str, float] = {}
        self.profiles: dict[tuple[str, str], Profile] = {}
        self.orders: dict[tuple[str, str], Order] = {}
        self.order_buyer: dict[tuple[str, str], str] = {}
        self.adapters: dict[str, Adapter] = {}
        self.pending_ingest = 0
        self.started = time.time()
        self.ready = False
        self._seq = 0
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._grace: dict[str, asyncio.TimerHandle] = {}
        self._tick_pending = False
        self._outbox: list[tuple[float, int]] = []
        self._outbox_items: dict[int, OutboundReply] = {}
        self._outbox_attempts: dict[int, int] = {}
        self._sending: set[int] = set()
        self._stopping = False
        self.token_key = b""
        self.on_committed: list[Callable[[list[Decision]], None]] = []
        #: Called on the event loop with each committed batch of journal rows and the outbox ids of
        #: its reply rows (by index): what the store now holds, for figures kept live (router/service/today.py).
        self.on_journaled: list[Callable[[list[tuple], dict[int, int]], None]] = []
        #: A concrete logger for the per-decision lines: the module's lazy proxy rebuilds its
        #: bound logger on every call (logging is configured before the service is made).
        self._log = log.bind()

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, replay the journal, and start the consumer and the clock."""
        from router.storage.accounts import token_key

        self.store.start()
        self.token_key = await self.store.call(token_key)
        replayed = await self._replay()
        await self._load_side_tables()
        await self.writer.start()
        self._make_adapters()
        self._tasks = [
            asyncio.create_task(self._consume(), name="fenliu-consumer"),
            asyncio.create_task(self._ticker(), name="fenliu-ticker"),
            asyncio.create_task(self._outbox_loop(), name="fenliu-outbox"),
            asyncio.create_task(IdleCloser(self).run(), name="fenliu-idle-close"),
        ]
        if self.config.main.server.watch_config:
            self._tasks.append(asyncio.create_task(self.reloader.watch(), name="fenliu-config-watch"))
        if self._seq == 0:  # a new store: agents start offline
            for aid, st in sorted(self.router.dispatcher.agents.items()):
                if st.status != "offline":
                    self._enqueue(_Job("event", (AgentStatusEvent(aid, "offline"), None)))
        else:
            for aid, st in self.router.dispatcher.agents.items():
                if st.status != "offline":
                    self._start_grace(aid)
        tune_gc()
        self.ready = True
        log.info("service_started", snapshot=self._snapshot_seq, replayed=replayed, seq=self._seq, store=str(self.store.path))

    def _writer_failed(self, why: str) -> None:
        self.failed = why
        self.ready = False

    def _refusal(self) -> JournalFailed:
        """What every caller gets once the service has failed closed."""
        return JournalFailed(f"the service cannot journal: {self.failed}")

    async def stop(self) -> None:
        """Drain what is queued, commit it, then close the store."""
        if self._stopping:
            return
        self._stopping = True
        self.ready = False
        for handle in self._grace.values():
            handle.cancel()
        self._queue.put_nowait(None)
        consumer = self._tasks[0] if self._tasks else None
        if consumer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
        for task in self._tasks[1:]:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # a background task that died must not stop the store from closing
                log.exception("task_failed", task=task.get_name())
        for adapter in self.adapters.values():
            with contextlib.suppress(Exception):
                await adapter.close()
        await self.writer.close()
        await self.store.close()
        if self._lookup is not None:
            self._lookup.close()
        log.info("service_stopped", seq=self._seq)

    def _make_adapters(self) -> None:
        adapters: dict[str, Adapter] = {}
        for sid, shop in self.config.shops.items():
            name = "simulator" if self.simulate and not shop.callback_url else shop.adapter
            cls = adapter_class(name)
            if cls is None:
                log.error("unknown_adapter", shop_id=sid, adapter=name)
                continue
            adapters[sid] = cls(shop, self)
        self.adapters = adapters

    # -- replay -----------------------------------------------------------------------------------

    async def _replay(self) -> int:
        """Rebuild the router: restore the newest usable snapshot, if any, then replay the journal
        entries after it, feeding the router the recorded clock values."""
        router = self.router
        self._seq = await self.store.call(last_seq)
        self._fingerprint = await asyncio.to_thread(snapshot.fingerprint, self.config)
        after = self._snapshot_seq = await self._restore_snapshot()
        # Replay races through history: a GC pause must not make a plugin "overrun" here and
        # drop a result (a block, say) that the live run applied.
        router.replaying = True
        try:
            with router.plugins.without_budget():
                count = await self._replay_journal(after)
        finally:
            router.replaying = False
        open_ids = set(router.dispatcher.conversations)
        for cid in list(self.history):
            if cid not in open_ids:
                self._forget_conversation(cid)
        for cid, conv in router.dispatcher.conversations.items():
            if conv.agent_id is not None:
                self.owner[cid] = conv.agent_id
        self._clock = time.time()
        return count

    async def _restore_snapshot(self) -> int:
        """Restore the newest snapshot taken under this configuration; returns the journal entry
        it includes (0: none, replay everything). The dedupe ids up to it are read back from the
        journal without routing."""
        row = await self.store.call(lambda c: c.execute(
            "SELECT seq, fingerprint, format, body FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone())
        if row is None:
            return 0
        seq, fp, fmt, body = row
        if fmt != snapshot.FORMAT or fp != self._fingerprint or seq > self._seq:
            log.info("snapshot_not_used", seq=seq, reason="taken under another configuration, Fenliu or plugins"
                     if fp != self._fingerprint else f"format {fmt}" if fmt != snapshot.FORMAT else "ahead of the journal")
            return 0
        try:
            snap = await asyncio.to_thread(snapshot.load, body)
            service = _service_snapshot.decode(snap["service"])
        except Exception as exc:  # noqa: BLE001 - an unreadable snapshot costs a full replay, nothing else
            log.warning("snapshot_unreadable", seq=seq, error=f"{type(exc).__name__}: {exc}")
            return 0
        snapshot.restore(self.router.dispatcher, snap["dispatcher"])
        self.history.update((cid, deque(items, maxlen=HISTORY)) for cid, items in service.history.items())
        self.context.update(service.context)
        self.waiting_since.update(service.waiting_since)
        self._clock = service.clock
        ids = self.router.seen
        assert ids is not None

        def read_ids(conn: sqlite3.Connection) -> None:
            # Ids older than the window go to the filters in the order of the (covering) unique
            # index, which reads a tenth of the table; the window's own ids in journal order.
            row = conn.execute("SELECT seq FROM journal WHERE kind = 'message' AND seq <= ? ORDER BY seq DESC "
                               "LIMIT 1 OFFSET ?", (seq, ids.window - 1)).fetchone()
            start = row[0] if row is not None else 0
            ids.remember_old(conn.execute("SELECT shop_id, msg_id FROM journal INDEXED BY journal_msg "
                                          "WHERE kind = 'message' AND seq < ?", (start,)))
            for shop_id, msg_id in conn.execute("SELECT shop_id, msg_id FROM journal WHERE kind = 'message' "
                                                "AND seq >= ? AND seq <= ? ORDER BY seq", (start, seq)):
                ids.seen_before(shop_id, msg_id)

        await self.store.call(read_ids)
        log.info("snapshot_restored", seq=seq, conversations=len(self.router.dispatcher.conversations))
        return seq

    async def _snapshot(self) -> None:
        """Snapshot the routing state once everything routed so far is committed and told (so
        the history agents were sent matches the dispatcher), as its own commit."""
        await self.writer.flush()
        if self.failed is not None or self._seq == self._snapshot_seq:
            return
        seq, fp = self._seq, self._fingerprint
        try:
            # msgspec, not pickle, for the histories: seven times faster, and this blocks routing
            body = snapshot.dump(self.router.dispatcher, msgspec.msgpack.encode(ServiceSnapshot(
                {cid: list(items) for cid, items in self.history.items()}, self.context, self.waiting_since,
                self._clock)))
        except Exception as exc:  # noqa: BLE001 - e.g. a plugin put something unpicklable in meta
            log.warning("snapshot_failed", seq=seq, error=f"{type(exc).__name__}: {exc}")
            self._snapshot_seq = seq  # try again after another snapshot_every entries
            return

        def done(_ids: Any, error: BaseException | None) -> None:
            if error is not None:
                log.warning("snapshot_not_written", seq=seq, error=str(error))
            else:
                log.info("snapshot_written", seq=seq, bytes=len(body))

        self._snapshot_seq = seq
        self.writer.submit([("snapshot", seq, time.time(), fp, snapshot.FORMAT, body)], done)

    async def _replay_journal(self, after: int = 0) -> int:
        router = self.router
        count = 0
        # A ``faults`` entry names the hook calls whose results the live run dropped for the
        # message entry right after it; replay drops the same (Router.replay_message).
        dropped: tuple[int, list[tuple[str, str]]] | None = None
        while True:
            rows = await self.store.call(lambda c, a=after: journal_page(c, a))
            if not rows:
                break
            for seq, kind, clock, body in rows:
                after = seq
                if kind == "faults":
                    dropped = (seq + 1, _dropped.decode(body))
                    continue
                self._clock = clock
                await router.advance(clock)
                try:
                    if kind == "message":
                        msg = _message.decode(body)
                        if dropped is not None and dropped[0] == seq:
                            decisions = await router.replay_message(msg, dropped[1])
                        else:
                            decisions = await router.handle_message(msg)
                        own = next((d for d in decisions if d.msg_id == msg.msg_id), None)
                        self._remember_message(msg, own, clock)
                    elif kind == "event":
                        event = _event.decode(body)
                        await router.handle_event(event)
                        if isinstance(event, CloseEvent):
                            self._forget_conversation(event.conversation_id)
                except InputError as exc:
                    log.warning("replay_input_refused", seq=seq, reason=str(exc))
                count += 1
        return count

    async def _load_side_tables(self) -> None:
        open_ids = list(self.router.dispatcher.conversations)

        def read(conn: sqlite3.Connection) -> tuple[list, list, list, list]:
            profiles = conn.execute("SELECT shop_id, buyer_id, tags, notes FROM profiles").fetchall()
            orders = conn.execute("SELECT shop_id, order_id, buyer_id, body, updated FROM orders ORDER BY updated").fetchall()
            replies = []
            for i in range(0, len(open_ids), 500):
                chunk = open_ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                replies += conn.execute(
                    f"SELECT conversation_id, agent_id, text, ts FROM outbox WHERE conversation_id IN ({marks})", chunk
                ).fetchall()
            pending = conn.execute(
                "SELECT id, shop_id, conversation_id, buyer_id, text, ts, agent_id, attempts, next_at "
                "FROM outbox WHERE acked IS NULL"
            ).fetchall()
            return profiles, orders, replies, pending

        profiles, orders, replies, pending = await self.store.call(read)
        for shop_id, buyer_id, tags, notes in profiles:
            self.profiles[(shop_id, buyer_id)] = Profile(json.loads(tags), json.loads(notes))
        for shop_id, order_id, buyer_id, body, _ in orders:
            if buyer_id:
                self.order_buyer[(shop_id, order_id)] = buyer_id
                self.orders[(shop_id, buyer_id)] = _order.decode(body)
        conversations = self.router.dispatcher.conversations
        for cid, agent_id, text, ts in replies:
            conv = conversations.get(cid)
            if conv is None or ts < conv.opened_at:  # sent in an earlier conversation of the same buyer
                continue
            hist = self.history.setdefault(cid, deque(maxlen=HISTORY))
            item = WsHistoryItem("agent", text, ts, agent_id=agent_id)
            if item not in hist:  # a restored snapshot holds the replies sent before it
                hist.append(item)
        for cid, hist in self.history.items():
            self.history[cid] = hist = deque(sorted(hist, key=lambda h: h.ts), maxlen=HISTORY)
            since = self.waiting_since.get(cid)
            if since is not None:  # replies are not journal entries: a replayed wait may be over
                replied = max((h.ts for h in hist if h.who == "agent"), default=None)
                if replied is not None and replied >= since:
                    later = [h.ts for h in hist if h.who == "buyer" and h.ts > replied]
                    if later:
                        self.waiting_since[cid] = min(later)
                    else:
                        del self.waiting_since[cid]
        for rid, shop_id, cid, buyer_id, text, ts, agent_id, attempts, next_at in pending:
            self._queue_outbox(OutboundReply(rid, shop_id, cid, buyer_id, text, ts, agent_id), next_at, attempts)

    # -- submitting work (HTTP handlers, WebSocket sessions, adapters) ------------------------------

    def _enqueue(self, job: _Job) -> None:
        if self.failed is not None and job.kind != "tick":
            raise self._refusal()
        self._queue.put_nowait(job)

    def _future(self) -> asyncio.Future:
        return asyncio.get_running_loop().create_future()

    async def ingest(self, messages: list[Message]) -> IngestResult:
        """Route and journal messages; returns once they are committed."""
        limit = self.config.main.server.ingest_queue_max
        if self.failed is not None:
            raise self._refusal()
        if self.pending_ingest + len(messages) > limit or self._stopping:
            raise Overloaded
        self.pending_ingest += len(messages)
        fut = self._future()
        self._enqueue(_Job("messages", (messages,), fut))
        return await fut

    async def event(self, event: Event) -> list[Decision]:
        """Apply an event (accept, close, transfer, status); raises InputError if refused."""
        fut = self._future()
        self._enqueue(_Job("event", (event, fut)))
        return await fut

    async def reply(self, agent_id: str, conversation_id: str, text: str) -> OutboundResult:
        """An agent's reply: checked by the outbound filters, journaled, then sent."""
        fut = self._future()
        self._enqueue(_Job("reply", (agent_id, conversation_id, text), fut))
        return await fut

    async def order_context(self, items: list[OrderContext]) -> None:
        """Order news from a platform: first the buyer's story is kept (every order, scans,
        after-sale requests, also of orders no buyer's message has named yet), so an agent told
        by the ``context`` frame below reads it; then the buyer's current order and open
        conversation change in the consumer."""
        now = time.time()
        await self.store.call(lambda conn: story.record(conn, items, now))
        fut = self._future()
        self._enqueue(_Job("context", (items,), fut))
        await fut

    async def _apply_reload(self, config: Config) -> None:
        await self.reload(config)
        self.metrics.reloads.inc()

    async def reload(self, config: Config) -> list[Decision]:
        fp = await asyncio.to_thread(snapshot.fingerprint, config)
        fut = self._future()
        self._enqueue(_Job("reload", (config, fp), fut))
        return await fut

    # -- the consumer -------------------------------------------------------------------------------

    async def _consume(self) -> None:
        queue = self._queue
        while True:
            job = await queue.get()
            batch: list[_Job] = []
            stop = job is None
            if job is not None:
                batch.append(job)
            while len(batch) < BATCH and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    stop = True
                    continue
                batch.append(nxt)
            if batch and self.failed is not None:
                self._refuse(batch)
            elif batch:
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
                self._commit(rows, afters)
                every = self.config.main.storage.snapshot_every
                if every and self._seq - self._snapshot_seq >= every:
                    await self._snapshot()
                # The hooks are synchronous and ``queue.get()`` does not suspend while jobs wait,
                # so without this the consumer drained a whole backlog in one step: the callers
                # whose commits were done (woken behind it) waited for all of it before their
                # ``202``, while their agents had long been told (bench_latency.py).
                await asyncio.sleep(0)
            if stop:
                if self.config.main.storage.snapshot_every:
                    await self._snapshot()  # the next start replays nothing
                await self.writer.flush()
                return

    def _refuse(self, jobs: list[_Job]) -> None:
        """Jobs queued before the journal failed are not routed: the state they would build on
        is already ahead of the store."""
        refused = self._refusal()
        for job in jobs:
            if job.kind == "messages":
                self.pending_ingest -= len(job.args[0])
            fut = job.waiter
            if fut is not None and not fut.done():
                fut.set_exception(refused)

    def _commit(self, rows: list[tuple], afters: list[Callable[[dict[int, int]], None]]) -> None:
        if not rows and not afters:
            return

        def done(result: dict[int, int] | None, error: BaseException | None) -> None:
            if error is not None:
                why = f"a journal commit failed ({error}); restart the service to rebuild its state from the store"
                log.error("journal_write_failed", error=str(error), hint="restart")
                self._writer_failed(why)
                refused = self._refusal()
                for a in afters:
                    with contextlib.suppress(Exception):
                        a.fail(refused)  # type: ignore[attr-defined]
                return
            for a in afters:
                try:
                    a(result or {})
                except Exception:  # noqa: BLE001
                    log.exception("after_commit_failed")
            self._journaled(rows, result or {})
            self.metrics.flush()

        self.writer.submit(flat_rows(rows), done)

    def _journaled(self, rows: list[tuple], ids: dict[int, int]) -> None:
        """Tell :attr:`on_journaled` what the store now holds; a failing callback is logged."""
        for cb in self.on_journaled:
            try:
                cb(rows, ids)
            except Exception:  # noqa: BLE001
                log.exception("journaled_callback_failed")

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def _advance(self, rows: list[tuple]) -> list[Decision]:
        """Set the clock for the next input and run due timers; journal a tick if it moved
        anything, or if it is the router's first clock value."""
        self._clock = now = max(time.time(), self._clock)
        first = self.router.dispatcher.now is None
        moved = await self.router.advance(now)
        if moved or first:
            rows.append(("tick", self._next_seq(), now, None, None, None, None, moved))
        return moved

    async def _process(self, job: _Job, rows: list[tuple], afters: list) -> None:
        kind = job.kind  # ingest jobs ("messages") are routed in runs by _consume
        if kind == "event":
            await self._process_event(job, rows, afters)
        elif kind == "tick":
            self._tick_pending = False
            moved = await self._advance(rows)
            if moved:
                afters.append(_After(lambda ids, m=moved: self._push(m)))
        elif kind == "reply":
            await self._process_reply(job, rows, afters)
        elif kind == "context":
            self._process_context(job, rows, afters)
        elif kind == "reload":
            config, self._fingerprint = job.args
            moved = await self._advance(rows)
            changed = self.router.reload(config)
            self.config = config
            self._make_adapters()
            if changed:
                rows.append(("tick", self._next_seq(), self._clock, None, None, None, None, changed))
            fut = job.future

            def after(ids: dict[int, int], m=moved + changed) -> None:
                self._push(m)
                self._after_reload()
                if fut is not None and not fut.done():
                    fut.set_result(m)

            afters.append(_After(after, fut))

    async def _process_messages(self, jobs: list[_Job], rows: list[tuple], afters: list) -> None:
        """Route the messages of consecutive ingest jobs; one after-commit callback tells agents
        and resolves every job's future (per job, it cost more than routing a short message).
        A job that fails unexpectedly gets the exception; the others go on."""
        pushed: list[Decision] = []
        seen: list[tuple[Message, Decision | None, float]] = []
        answers: list[tuple[asyncio.Future | None, IngestResult]] = []
        router = self.router
        ids = router.seen
        assert ids is not None
        count, metrics = self.metrics.count, self.metrics
        for job in jobs:
            (messages,) = job.args
            result = IngestResult()
            try:
                # One clock value for a job's messages (a batch arrived at once): the timers are
                # run once per request, not once per message.
                moved = await self._advance(rows)
                if moved:
                    pushed.extend(moved)
                for i, msg in enumerate(messages):
                    if ids.maybe_seen_long_ago(msg.shop_id, msg.msg_id) and await self._journaled_before(msg):
                        result.duplicates.append(msg.msg_id)
                        count(metrics.duplicates, msg.shop_id)
                        continue
                    msg = self._enrich(msg)
                    try:
                        decisions = await router.handle_message(msg)
                    except InputError as exc:
                        result.errors.append((i, str(exc)))
                        continue
                    own = None
                    for d in decisions:
                        if d.msg_id == msg.msg_id:
                            own = d
                            break
                    if own is not None and own.action == "duplicate":
                        result.duplicates.append(msg.msg_id)
                        count(metrics.duplicates, msg.shop_id)
                        continue
                    if router.dropped:  # the entry just before its message, in the same commit
                        rows.append(("faults", self._next_seq(), self._clock, msg.shop_id, msg.msg_id,
                                     msg.conversation_id, _encode(router.dropped), ()))
                    rows.append(("message", self._next_seq(), self._clock, msg.shop_id, msg.msg_id,
                                 msg.conversation_id, _encode(msg), decisions))
                    result.accepted.append(msg.msg_id)
                    count(metrics.messages, msg.shop_id)
                    pushed.extend(decisions)
                    seen.append((msg, own, self._clock))
            except Exception as exc:  # noqa: BLE001 - one bad job must not stop routing
                log.exception("job_failed", kind="messages")
                if job.future is not None and not job.future.done():
                    job.future.set_exception(exc)
                continue
            finally:
                self.pending_ingest -= len(messages)
            answers.append((job.future, result))

        def after(ids: dict[int, int]) -> None:
            for msg, own, clock in seen:
                self._remember_message(msg, own, clock)
            self._push(pushed, {m.msg_id: m for m, _, _ in seen})
            for fut, result in answers:
                if fut is not None and not fut.done():
                    fut.set_result(result)

        afters.append(_After(after, *(fut for fut, _ in answers)))
        orders = []
        for m, _, c in seen:
            if m.order is not None and m.order.order_id and (order := self._note_order(m.shop_id, m.buyer_id, m.order)):
                orders.append((m.shop_id, order.order_id, m.buyer_id, story.order_json(order), c))
        if orders:
            rows.append(("orders", orders))

    async def _journaled_before(self, msg: Message) -> bool:
        """The store's exact answer for a message id older than the dedupe window that its Bloom
        filters could not rule out (an old resend, or one false positive in a thousand)."""
        def look() -> bool:
            if self._lookup is None:
                self._lookup = read_only(self.store.path, check_same_thread=False)
            return self._lookup.execute(
                "SELECT 1 FROM journal WHERE kind = 'message' AND shop_id = ? AND msg_id = ?",
                (msg.shop_id, msg.msg_id)).fetchone() is not None

        return await asyncio.to_thread(look)

    async def _process_event(self, job: _Job, rows: list[tuple], afters: list) -> None:
        event, fut = job.args
        self._clock = now = max(time.time(), self._clock)
        first = self.router.dispatcher.now is None
        moved = await self.router.advance(now)
        closing = self.owner.get(event.conversation_id) if isinstance(event, CloseEvent) else None
        try:
            decisions = await self.router.handle_event(event)
        except InputError as exc:
            if moved or first:
                rows.append(("tick", self._next_seq(), now, None, None, None, None, moved))
            afters.append(_After(lambda ids: self._push(moved)))
            if fut is not None and not fut.done():
                fut.set_exception(exc)
            return
        cid = getattr(event, "conversation_id", None)
        shop_id = cid.split(":", 1)[0] if cid else None
        rows.append(("event", self._next_seq(), now, shop_id, None, cid, _encode(event), moved + decisions))

        def after(ids: dict[int, int]) -> None:
            if isinstance(event, CloseEvent):
                if closing is not None:
                    self._send(closing, WsClosed(event.conversation_id))
                self.owner.pop(event.conversation_id, None)
                self._forget_conversation(event.conversation_id)
            self._push(moved + decisions)
            if isinstance(event, AcceptEvent):
                structlog.get_logger("fenliu.service").info(
                    "accepted", agent_id=event.agent_id, conversation_id=event.conversation_id)
            if fut is not None and not fut.done():
                fut.set_result(moved + decisions)

        afters.append(_After(after, fut))

    async def _process_reply(self, job: _Job, rows: list[tuple], afters: list) -> None:
        agent_id, cid, text = job.args
        fut = job.future
        conv = self.router.dispatcher.conversations.get(cid)
        if conv is None or conv.agent_id != agent_id:
            fut.set_exception(NotYours(i18n._("conversation {cid!r} is not yours", cid=cid)))
            return
        if conv.state == "reserved":
            fut.set_exception(NotYours(i18n._("accept conversation {cid!r} before replying", cid=cid)))
            return
        self._clock = max(time.time(), self._clock)
        result = await self.router.check_reply(conv.shop_id, text, cid, agent_id)
        if not result.ok:
            self.metrics.replies.labels("refused").inc()
            log.info("reply_refused", agent_id=agent_id, conversation_id=cid, shop_id=conv.shop_id,
                     reason=result.reason, words=[h.word for h in result.hits])
            if result.hits:  # the raw material of quality inspection (fenliu stats: violations)
                found = [(time.time(), conv.shop_id, cid, agent_id, h.word, h.tag or "", h.source) for h in result.hits]
                self.store.submit(lambda conn: conn.executemany(
                    "INSERT INTO violations (ts, shop_id, conversation_id, agent_id, word, tag, source) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", found))
            fut.set_result(result)
            return
        now = self._clock
        index = len(rows)
        rows.append(("reply", conv.shop_id, cid, conv.buyer_id, agent_id, result.text, now))

        def after(ids: dict[int, int]) -> None:
            rid = ids.get(index)
            self.metrics.replies.labels("sent").inc()
            since = self.waiting_since.pop(cid, None)
            if since is not None:
                self.metrics.reply_latency.observe(max(0.0, now - since))
            self.history.setdefault(cid, deque(maxlen=HISTORY)).append(
                WsHistoryItem("agent", result.text, now, agent_id=agent_id))
            if rid is not None:
                self._queue_outbox(OutboundReply(rid, conv.shop_id, cid, conv.buyer_id, result.text, now, agent_id), now, 0)
            if not fut.done():
                fut.set_result(result)

        afters.append(_After(after, fut))

    def _process_context(self, job: _Job, rows: list[tuple], afters: list) -> None:
        (items,) = job.args
        writes = []
        pushes: list[tuple[str, Order]] = []
        for item in items:
            order = item.order
            buyer = item.buyer_id or (self.order_buyer.get((item.shop_id, order.order_id or "")))
            if buyer is None:
                continue
            noted = self._note_order(item.shop_id, buyer, order)
            if noted is None:  # nothing new about the buyer's current order
                if not (item.logistics or item.aftersale):
                    continue
                # new scans or after-sale news of it: the agent is told, to reread the buyer's story
                pushes.append((f"{item.shop_id}:{buyer}", self.orders.get((item.shop_id, buyer)) or order))
                continue
            if noted.order_id:
                writes.append((item.shop_id, noted.order_id, buyer, story.order_json(noted), self._clock))
            pushes.append((f"{item.shop_id}:{buyer}", noted))
        if writes:
            rows.append(("orders", writes))
        fut = job.future

        def after(ids: dict[int, int]) -> None:
            for cid, order in pushes:
                buyer, _ = self.context.get(cid, (None, None))
                if cid in self.router.dispatcher.conversations:
                    self.context[cid] = (buyer, order)
                agent = self.owner.get(cid)
                if agent is not None:
                    self._send(agent, WsContext(cid, order))
            if fut is not None and not fut.done():
                fut.set_result(None)

        afters.append(_After(after, fut))

    # -- enrichment: buyer profiles and order context ----------------------------------------------

    def _note_order(self, shop_id: str, buyer_id: str, order: Order) -> Order | None:
        """Make ``order`` the buyer's current order, merged into what is known of it when it is the
        same order; returns it if that changed anything (to be written), else ``None``.

        Platform pushes and the orders buyers' messages carry both go through here, so the
        current order live is the one a restart picks (the row written last): a message that
        names the current order again, unchanged, writes nothing."""
        key = (shop_id, buyer_id)
        old = self.orders.get(key)
        if order == old:  # the common case: a buyer's messages keep naming the same order
            return None
        if old is not None and old.order_id == order.order_id:
            order = msgspec.structs.replace(
                old, **{f: getattr(order, f) for f in order.__struct_fields__ if getattr(order, f) not in (None, 0.0)})
            if order == old:
                return None
        self.orders[key] = order
        if order.order_id:
            self.order_buyer[(shop_id, order.order_id)] = buyer_id
        return order

    def _enrich(self, msg: Message) -> Message:
        key = (msg.shop_id, msg.buyer_id)
        profile = self.profiles.get(key)
        order = self.orders.get(key)
        if profile is None and order is None:
            return msg
        changes: dict[str, Any] = {}
        if profile is not None and profile.tags:
            buyer = msg.buyer or Buyer()
            tags = tuple(dict.fromkeys((*buyer.tags, *profile.tags)))
            if tags != buyer.tags:
                changes["buyer"] = msgspec.structs.replace(buyer, tags=tags)
        if order is not None:
            if msg.order is None:
                changes["order"] = order
            elif msg.order.order_id == order.order_id and msg.order.status is None and order.status:
                changes["order"] = msgspec.structs.replace(msg.order, status=order.status)
        return msgspec.structs.replace(msg, **changes) if changes else msg

    async def set_profile(self, shop_id: str, buyer_id: str, *, tags: list[str] | None = None,
                          add_tags: tuple[str, ...] = (), note: str | None = None,
                          author: str | None = None) -> Profile:
        """Set or extend a buyer's tags and add a note; applies to the buyer's next message."""
        key = (shop_id, buyer_id)
        current = self.profiles.get(key) or Profile()
        new_tags = list(tags) if tags is not None else list(current.tags)
        for t in add_tags:
            if t not in new_tags:
                new_tags.append(t)
        notes = list(current.notes)
        if note:
            notes.append({"text": note, "by": author, "ts": time.time()})
            notes = notes[-200:]
        profile = Profile(new_tags, notes)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO profiles (shop_id, buyer_id, tags, notes, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(shop_id, buyer_id) DO UPDATE SET tags = excluded.tags, notes = excluded.notes, "
                "updated = excluded.updated",
                (shop_id, buyer_id, json.dumps(new_tags, ensure_ascii=False), json.dumps(notes, ensure_ascii=False), time.time()),
            )

        await self.store.call(write)
        self.profiles[key] = profile
        return profile

    async def add_note(self, agent_id: str | None, conversation_id: str, text: str, tags: tuple[str, ...] = ()) -> Profile:
        conv = self.router.dispatcher.conversations.get(conversation_id)
        if conv is None:
            raise NotYours(i18n._("no open conversation {cid!r}", cid=conversation_id))
        if text:
            now = time.time()

            def write(conn: sqlite3.Connection) -> None:
                conn.execute("INSERT INTO notes (shop_id, conversation_id, agent_id, text, ts) VALUES (?, ?, ?, ?, ?)",
                             (conv.shop_id, conversation_id, agent_id, text, now))

            await self.store.call(write)
        return await self.set_profile(conv.shop_id, conv.buyer_id, add_tags=tags, note=text or None, author=agent_id)

    # -- telling agents ------------------------------------------------------------------------------

    def _remember_message(self, msg: Message, own: Decision | None, clock: float) -> None:
        cid = msg.conversation_id
        if own is not None and own.action == "blocked":
            return
        text = own.text if own is not None and own.text is not None else msg.text
        hist = self.history.setdefault(cid, deque(maxlen=HISTORY))
        hist.append(WsHistoryItem("buyer", text, msg.ts or clock, msg_id=msg.msg_id, kind=msg.kind))
        if own is not None and own.reply:
            hist.append(WsHistoryItem("bot", own.reply, clock))
        prev_buyer, prev_order = self.context.get(cid, (None, None))
        self.context[cid] = (msg.buyer or prev_buyer, msg.order or prev_order)
        if own is not None and own.action in ("assigned", "queued"):
            self.waiting_since.setdefault(cid, clock)

    def _forget_conversation(self, cid: str) -> None:
        self.history.pop(cid, None)
        self.context.pop(cid, None)
        self.waiting_since.pop(cid, None)

    async def hello(self, agent_id: str) -> tuple[str, list[WsAssigned]]:
        """What a newly connected agent is told: its status and the conversations it holds."""
        st = self.router.dispatcher.agents.get(agent_id)
        snaps = [s for cid in self.conversations_of(agent_id) if (s := self.snapshot(cid)) is not None]
        return (st.status if st else "offline"), snaps

    def snapshot(self, cid: str, cause: str = "message") -> WsAssigned | None:
        conv = self.router.dispatcher.conversations.get(cid)
        if conv is None:
            return None
        buyer, order = self.context.get(cid, (None, None))
        return WsAssigned(cid, conv.shop_id, conv.buyer_id, conv.state, conv.skill, conv.priority, cause,
                          conv.reserved_until, buyer, order, list(self.history.get(cid, ())))

    def _send(self, agent_id: str, frame: msgspec.Struct) -> None:
        session = self.sessions.get(agent_id)
        if session is not None:
            session.deliver(frame)

    def _push(self, decisions: list[Decision], messages: dict[str, Message] | None = None) -> None:
        """Tell agents what committed decisions mean for them, and count them."""
        for d in decisions:
            self.metrics.count(self.metrics.decisions, d.action, d.cause)
            cid = d.conversation_id
            prev = self.owner.get(cid)
            if d.action == "assigned" and d.agent_id:
                if prev != d.agent_id:
                    if prev is not None:
                        self._send(prev, WsTransferred(cid, d.cause, d.agent_id))
                    self.owner[cid] = d.agent_id
                    snap = self.snapshot(cid, d.cause)
                    if snap is not None:
                        self._send(d.agent_id, snap)
                    self._log.info("assigned", shop_id=d.shop_id, conversation_id=cid, agent_id=d.agent_id, cause=d.cause)
                elif d.msg_id is not None:
                    msg = (messages or {}).get(d.msg_id)
                    ts = (msg.ts if msg is not None else None) or self._clock
                    kind = msg.kind if msg is not None else "text"
                    self._send(d.agent_id, WsMessage(cid, d.msg_id, d.text or "", ts, kind, list(d.flags)))
            elif d.action == "queued" and prev is not None:
                self._send(prev, WsTransferred(cid, d.cause))
                self.owner.pop(cid, None)
        for cb in self.on_committed:
            cb(decisions)

    # -- sessions and reconnect grace -------------------------------------------------------------------

    async def attach(self, session: Session) -> Session | None:
        """An agent connected: cancel its grace timer, bring it online if it was offline.
        Returns the session it replaces, if any."""
        aid = session.agent_id
        handle = self._grace.pop(aid, None)
        if handle is not None:
            handle.cancel()
        old = self.sessions.get(aid)
        self.sessions[aid] = session
        self.metrics.ws_agents.set(len(self.sessions))
        st = self.router.dispatcher.agents.get(aid)
        if st is not None and st.status == "offline":
            with contextlib.suppress(InputError):
                await self.event(AgentStatusEvent(aid, "online"))
        log.info("agent_connected", agent_id=aid)
        return old

    def detach(self, session: Session) -> None:
        aid = session.agent_id
        if self.sessions.get(aid) is not session:
            return
        del self.sessions[aid]
        self.metrics.ws_agents.set(len(self.sessions))
        if not self._stopping:
            self._start_grace(aid)
        log.info("agent_disconnected", agent_id=aid, grace_s=self.config.main.server.reconnect_grace_s)

    def _start_grace(self, agent_id: str) -> None:
        old = self._grace.pop(agent_id, None)
        if old is not None:
            old.cancel()
        grace = self.config.main.server.reconnect_grace_s
        self._grace[agent_id] = asyncio.get_running_loop().call_later(grace, self._grace_over, agent_id)

    def _grace_over(self, agent_id: str) -> None:
        self._grace.pop(agent_id, None)
        if agent_id in self.sessions or self._stopping:
            return
        st = self.router.dispatcher.agents.get(agent_id)
        if st is not None and st.status != "offline":
            log.info("agent_grace_over", agent_id=agent_id)
            self._enqueue(_Job("event", (AgentStatusEvent(agent_id, "offline"), None)))

    def _after_reload(self) -> None:
        for aid, st in self.router.dispatcher.agents.items():
            if st.status != "offline" and aid not in self.sessions and aid not in self._grace:
                self._enqueue(_Job("event", (AgentStatusEvent(aid, "offline"), None)))

    async def open_conversations(self) -> list[Conversation]:
        """The open conversations this service shows (all of them on one instance)."""
        return list(self.router.dispatcher.conversations.values())

    async def conversation_view(self, cid: str) -> ConversationView | None:
        conv = self.router.dispatcher.conversations.get(cid)
        if conv is None:
            return None
        buyer, order = self.context.get(cid, (None, None))
        notes = await self.store.call(lambda c: [{"by": a, "text": t, "ts": ts} for a, t, ts in c.execute(
            "SELECT agent_id, text, ts FROM notes WHERE conversation_id = ? AND ts >= ? ORDER BY id", (cid, conv.opened_at))])
        return ConversationView(conv, list(self.history.get(cid, ())), notes, buyer, order)

    def conversations_of(self, agent_id: str) -> list[str]:
        st = self.router.dispatcher.agents.get(agent_id)
        return list(st.conversations) if st is not None else []

    # -- the clock ---------------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            if not self._tick_pending:
                self._tick_pending = True
                self._enqueue(_Job("tick", ()))

    # -- outbound ------------------------------------------------------------------------------------------

    def _queue_outbox(self, item: OutboundReply, when: float, attempts: int) -> None:
        self._outbox_items[item.id] = item
        self._outbox_attempts[item.id] = attempts
        heapq.heappush(self._outbox, (when, item.id))
        if when <= time.time():
            self._deliver_soon(item.id)

    def _deliver_soon(self, rid: int) -> None:
        if rid in self._sending or rid not in self._outbox_items:
            return
        self._sending.add(rid)
        asyncio.get_running_loop().create_task(self._deliver(rid))

    async def _deliver(self, rid: int) -> None:
        item = self._outbox_items.get(rid)
        try:
            if item is None:
                return
            error = await deliver_once(self.adapters.get(item.shop_id), item)
            if self._stopping:
                return
            if error is None:
                self.metrics.outbound.labels("acked").inc()
                now = time.time()
                await self.store.call(lambda c: c.execute("UPDATE outbox SET acked = ?, failed = NULL WHERE id = ?", (now, rid)))
                self._outbox_items.pop(rid, None)
                self._outbox_attempts.pop(rid, None)
                return
            attempts = self._outbox_attempts.get(rid, 0) + 1
            self._outbox_attempts[rid] = attempts
            delay = min(60.0, 0.5 * 2 ** (attempts - 1))
            next_at = time.time() + delay
            self.metrics.outbound.labels("failed").inc()
            log.warning("delivery_failed", shop_id=item.shop_id, conversation_id=item.conversation_id,
                        reply_id=rid, attempts=attempts, retry_in_s=delay, error=error)
            await self.store.call(lambda c: c.execute(
                "UPDATE outbox SET attempts = ?, next_at = ?, failed = ? WHERE id = ?", (attempts, next_at, error, rid)))
            heapq.heappush(self._outbox, (next_at, rid))
        finally:
            self._sending.discard(rid)

    async def _outbox_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = time.time()
            while self._outbox and self._outbox[0][0] <= now:
                _, rid = heapq.heappop(self._outbox)
                self._deliver_soon(rid)

    def outbox_pending(self) -> int:
        return len(self._outbox_items)


class _After:
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


def _write_rows(conn: sqlite3.Connection, rows: list[tuple]) -> dict[int, int]:
    """Write one batch of journal rows (with ``Decision`` structs) on ``conn``: what the
    journal writer does, for callers that write in the store's thread (the Redis backend)."""
    return write_rows(conn, flat_rows(rows))
