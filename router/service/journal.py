"""The journal of one instance: what is committed before anyone is told, and how a start rebuilds
the router from it.

- **Journal, then acknowledge.** The router loop hands each batch's rows (each input with its
  clock value and decisions) to the journal writer process (:mod:`router.storage.writer`) and goes
  on routing while the commit runs; the batch's callers are answered and its agents told only
  when the commit is done (:meth:`Journal.commit`), so nothing acknowledged or shown can be lost.
- **Recovery is replay.** The router is deterministic given its inputs and clock values, so a
  start restores the newest usable snapshot and replays the entries after it with the recorded
  clock (:meth:`Journal.replay`). Inputs that only advanced the clock without moving anything
  are not journaled: firing the same timers at the next journaled input gives the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from adapters import OutboundReply
from router.core.models import CloseEvent, Event, Message, ServiceSnapshot, WsHistoryItem
from router.core.pipeline import InputError
from router.service.sessions import HISTORY
from router.storage import snapshot
from router.storage.journal_reads import JournalLookup, newest_snapshot, read_seen_ids, side_tables
from router.storage.store import journal_page, last_seq
from router.storage.writer import JournalWriter, flat_rows

if TYPE_CHECKING:
    from router.service.service import Service

log = structlog.get_logger("fenliu.service")

_message = msgspec.json.Decoder(Message)
_event = msgspec.json.Decoder(Event)
_dropped = msgspec.json.Decoder(list[tuple[str, str]])
_service_snapshot = msgspec.msgpack.Decoder(ServiceSnapshot)


class Journal:
    """Group commits through the writer process, snapshots, and replay at start."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.writer = JournalWriter(service.store.path, on_exit=service.fail,
                                    on_transaction=lambda: service.metrics.commits.inc())
        self.seq = 0
        self.snapshot_seq = 0  # the journal entry the newest snapshot includes
        self.fingerprint = ""
        self._lookup = JournalLookup(service.store.path)
        self._snapshotting: asyncio.Task | None = None  # a snapshot being pickled

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def close(self) -> None:
        if self._snapshotting is not None:  # submitted before the writer commits what it has
            await self._snapshotting
        await self.writer.close()
        self._lookup.close()

    # -- committing -------------------------------------------------------------------------------

    def commit(self, rows: list[tuple], afters: list[Callable[[dict[int, int]], None]]) -> None:
        if not rows and not afters:
            return
        s = self.service

        def done(result: dict[int, int] | None, error: BaseException | None) -> None:
            if error is not None:
                why = f"a journal commit failed ({error}); restart the service to rebuild its state from the store"
                log.error("journal_write_failed", error=str(error), hint="restart")
                s.fail(why)
                refused = s.refusal()
                for a in afters:
                    with contextlib.suppress(Exception):
                        a.fail(refused)  # type: ignore[attr-defined]
                return
            for a in afters:
                try:
                    a(result or {})
                except Exception:  # noqa: BLE001
                    log.exception("after_commit_failed")
            s.journaled(rows, result or {})
            s.metrics.flush()

        self.writer.submit(flat_rows(rows), done)

    async def journaled_before(self, msg: Message) -> bool:
        """The store's exact answer for a message id older than the dedupe window that its Bloom
        filters could not rule out (an old resend, or one false positive in a thousand)."""
        return await asyncio.to_thread(self._lookup.journaled, msg.shop_id, msg.msg_id)

    # -- snapshots ----------------------------------------------------------------------------------

    async def snapshot(self, wait: bool = False) -> None:
        """Snapshot the routing state once everything routed so far is committed and told (so
        the history agents were sent matches the dispatcher), as its own commit.

        Routing waits only for that and for a fork: a child pickles the state as it was then
        (:func:`snapshot.dump_later`) and the body is submitted when it is ready, while routing
        goes on. One at a time: while one is pickled the next is skipped, unless ``wait`` (at
        the stop), which waits for it, takes the newest and returns once it is submitted."""
        s = self.service
        if self._snapshotting is not None:
            if not wait:
                return
            await self._snapshotting
        await self.writer.flush()
        if s.failed is not None or self.seq == self.snapshot_seq:
            return
        seq, fp, clock = self.seq, self.fingerprint, s.clock
        memory = s.memory

        def service_state() -> bytes:
            # msgspec, not pickle, for the histories: seven times faster
            return msgspec.msgpack.encode(ServiceSnapshot(
                {cid: list(items) for cid, items in memory.history.items()}, memory.context, memory.waiting_since,
                clock))

        started = time.perf_counter()
        collect = snapshot.dump_later(s.router.dispatcher, service_state)
        blocked_ms = round((time.perf_counter() - started) * 1000, 1)  # routing waited this long
        self.snapshot_seq = seq  # a failed one is tried again after another snapshot_every entries
        self._snapshotting = task = asyncio.create_task(self._submit_snapshot(seq, fp, collect, blocked_ms))
        if wait:
            await task

    async def _submit_snapshot(self, seq: int, fp: str, collect: Callable[[], bytes], blocked_ms: float) -> None:
        started = time.perf_counter()
        try:
            body = await asyncio.to_thread(collect)
        except Exception as exc:  # noqa: BLE001 - e.g. a plugin put something unpicklable in meta
            log.warning("snapshot_failed", seq=seq, error=str(exc))
            return
        finally:
            self._snapshotting = None
        pickled_ms = round((time.perf_counter() - started) * 1000, 1)

        def done(_ids: Any, error: BaseException | None) -> None:
            if error is not None:
                log.warning("snapshot_not_written", seq=seq, error=str(error))
            else:
                log.info("snapshot_written", seq=seq, bytes=len(body), ms=blocked_ms, pickled_ms=pickled_ms)

        self.writer.submit([("snapshot", seq, time.time(), fp, snapshot.FORMAT, body)], done)

    # -- replay -----------------------------------------------------------------------------------

    async def replay(self) -> int:
        """Rebuild the router: restore the newest usable snapshot, if any, then replay the journal
        entries after it, feeding the router the recorded clock values."""
        s = self.service
        router = s.router
        self.seq = await s.store.call(last_seq)
        self.fingerprint = await asyncio.to_thread(snapshot.fingerprint, s.config)
        after = self.snapshot_seq = await self._restore_snapshot()
        # Replay races through history: a GC pause must not make a plugin "overrun" here and
        # drop a result (a block, say) that the live run applied.
        router.replaying = True
        try:
            with router.plugins.without_budget():
                count = await self._replay_journal(after)
        finally:
            router.replaying = False
        open_ids = set(router.dispatcher.conversations)
        for cid in list(s.memory.history):
            if cid not in open_ids:
                s.memory.forget(cid)
        for cid, conv in router.dispatcher.conversations.items():
            if conv.agent_id is not None:
                s.memory.owner[cid] = conv.agent_id
        s.clock = time.time()
        return count

    async def _restore_snapshot(self) -> int:
        """Restore the newest snapshot taken under this configuration; returns the journal entry
        it includes (0: none, replay everything). The dedupe ids up to it are read back from the
        journal without routing."""
        s = self.service
        row = await s.store.call(newest_snapshot)
        if row is None:
            return 0
        seq, fp, fmt, body = row
        if fmt != snapshot.FORMAT or fp != self.fingerprint or seq > self.seq:
            log.info("snapshot_not_used", seq=seq, reason="taken under another configuration, Fenliu or plugins"
                     if fp != self.fingerprint else f"format {fmt}" if fmt != snapshot.FORMAT else "ahead of the journal")
            return 0
        try:
            snap = await asyncio.to_thread(snapshot.load, body)
            service = _service_snapshot.decode(snap["service"])
        except Exception as exc:  # noqa: BLE001 - an unreadable snapshot costs a full replay, nothing else
            log.warning("snapshot_unreadable", seq=seq, error=f"{type(exc).__name__}: {exc}")
            return 0
        snapshot.restore(s.router.dispatcher, snap["dispatcher"])
        s.memory.history.update((cid, deque(items, maxlen=HISTORY)) for cid, items in service.history.items())
        s.memory.context.update(service.context)
        s.memory.waiting_since.update(service.waiting_since)
        s.clock = service.clock
        ids = s.router.seen
        assert ids is not None
        await s.store.call(lambda c: read_seen_ids(c, seq, ids))
        log.info("snapshot_restored", seq=seq, conversations=len(s.router.dispatcher.conversations))
        return seq

    async def _replay_journal(self, after: int = 0) -> int:
        s = self.service
        router = s.router
        count = 0
        # A ``faults`` entry names the hook calls whose results the live run dropped for the
        # message entry right after it; replay drops the same (Router.replay_message).
        dropped: tuple[int, list[tuple[str, str]]] | None = None
        while True:
            rows = await s.store.call(lambda c, a=after: journal_page(c, a))
            if not rows:
                break
            for seq, kind, clock, body in rows:
                after = seq
                if kind == "faults":
                    dropped = (seq + 1, _dropped.decode(body))
                    continue
                s.clock = clock
                await router.advance(clock)
                try:
                    if kind == "message":
                        msg = _message.decode(body)
                        if dropped is not None and dropped[0] == seq:
                            decisions = await router.replay_message(msg, dropped[1])
                        else:
                            decisions = await router.handle_message(msg)
                        own = next((d for d in decisions if d.msg_id == msg.msg_id), None)
                        s.memory.remember_message(msg, own, clock)
                    elif kind == "event":
                        event = _event.decode(body)
                        await router.handle_event(event)
                        if isinstance(event, CloseEvent):
                            s.memory.forget(event.conversation_id)
                except InputError as exc:
                    log.warning("replay_input_refused", seq=seq, reason=str(exc))
                count += 1
        return count


async def load_side_tables(service: Service) -> None:
    """What the SQLite file holds beside the journal: profiles and current orders, the replies of
    open conversations (into their history) and the replies not yet acknowledged (queued again)."""
    s = service
    open_ids = list(s.router.dispatcher.conversations)

    profiles, orders, replies, pending = await s.store.call(lambda c: side_tables(c, open_ids))
    s.buyers.load(profiles, orders)
    history, waiting_since = s.memory.history, s.memory.waiting_since
    history_of = s.memory.history_of
    conversations = s.router.dispatcher.conversations
    for cid, agent_id, text, ts in replies:
        conv = conversations.get(cid)
        if conv is None or ts < conv.opened_at:  # sent in an earlier conversation of the same buyer
            continue
        hist = history_of(cid)
        item = WsHistoryItem("agent", text, ts, agent_id=agent_id)
        if item not in hist:  # a restored snapshot holds the replies sent before it
            hist.append(item)
    for cid, hist in history.items():
        history[cid] = hist = deque(sorted(hist, key=lambda h: h.ts), maxlen=HISTORY)
        since = waiting_since.get(cid)
        if since is not None:  # replies are not journal entries: a replayed wait may be over
            replied = max((h.ts for h in hist if h.who == "agent"), default=None)
            if replied is not None and replied >= since:
                later = [h.ts for h in hist if h.who == "buyer" and h.ts > replied]
                if later:
                    waiting_since[cid] = min(later)
                else:
                    del waiting_since[cid]
    for rid, shop_id, cid, buyer_id, text, ts, agent_id, attempts, next_at in pending:
        s.outbox.queue(OutboundReply(rid, shop_id, cid, buyer_id, text, ts, agent_id), next_at, attempts, in_doubt=True)
