"""The journal writer: group commits of the service's journal in a child process.

Why a process and not the store's thread: SQLite releases the GIL around every statement step,
and a writer thread must win the GIL back from the busy event loop after each one. Under ingest
load those waits, not SQLite, made most of a commit's latency, and since every ``202`` waits for
its commit, they capped the requests per second (docs/service.md, "Benchmark"). A child process
has its own interpreter: it writes while the event loop routes, and the two only exchange one
message per batch over a pipe.

Protocol (both directions: a 4-byte big-endian length, then a msgpack payload):

- parent → child: ``[batch_id, rows]`` with rows as :func:`flat_rows` makes them; a ``None``
  frame (or end of input) asks the child to finish and exit.
- child → parent: one frame per transaction, ``[[batch_id, outbox_ids, error], …]``: each batch
  committed (``error`` is ``None``) or rolled back (``error`` is the reason), in order. The child
  commits every batch already waiting in the pipe in one transaction (group commit).

The child dies with its parent (``PR_SET_PDEATHSIG`` on Linux, end of input elsewhere), so a
restarted service never races a writer left behind by a killed one. ``python -m router.storage.writer
PATH`` is the child; it imports only what it needs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import select
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import structlog

from router.storage.store import StoreClosed, connect

log = structlog.get_logger("fenliu.writer")

_HEADER = struct.Struct(">I")

_JOURNAL = "INSERT INTO journal (seq, kind, clock, shop_id, msg_id, conversation_id, body) VALUES "
_DECISIONS = "INSERT INTO decisions (seq, msg_id, shop_id, conversation_id, action, agent_id, cause, body) VALUES "
#: A conversation's row changes only when its state does: a buyer's follow-up to a conversation
#: that stays where it is rewrites nothing, so its (random) page is not written to the WAL again.
#: ``updated_seq`` is the journal entry of the last change.
_CONVERSATIONS = ("INSERT INTO conversations (id, shop_id, buyer_id, state, agent_id, skill, priority, updated_seq) VALUES ",
                  " ON CONFLICT(id) DO UPDATE SET state = excluded.state, agent_id = excluded.agent_id, "
                  "skill = COALESCE(excluded.skill, conversations.skill), priority = excluded.priority, "
                  "updated_seq = excluded.updated_seq "
                  "WHERE conversations.state IS NOT excluded.state OR conversations.agent_id IS NOT excluded.agent_id "
                  "OR conversations.skill IS NOT COALESCE(excluded.skill, conversations.skill) "
                  "OR conversations.priority IS NOT excluded.priority")
#: The rows that are journal entries (the rest go to side tables): inputs, clock ticks, and the
#: hook calls whose results a message's live routing dropped (replayed as dropped).
_JOURNAL_KINDS = ("message", "event", "tick", "faults")
#: Rows per statement: each size has its own cached statement, and a batch is cut into these.
_CHUNKS = (256, 128, 64, 32, 16, 8, 4, 2, 1)

_encode_json = msgspec.json.Encoder().encode

#: How a journaled event's body says it closed its conversation (the writer marks the row
#: ``closed``; today's figures end the wait).
CLOSE_EVENT = b'"type":"close"'


def _frame(payload: Any) -> bytes:
    """One frame of the protocol: the length, then the msgpack payload."""
    data = msgspec.msgpack.encode(payload)
    return _HEADER.pack(len(data)) + data


def flat_rows(rows: Iterable[tuple]) -> list[tuple]:
    """The service's journal rows, ready to cross the pipe: as they are. Their ``Decision``
    structs go over as msgpack maps (encoded in C with the frame) and are turned into the
    decisions table's rows and JSON bodies by the child (:func:`_decision_row`), off the event
    loop: doing that here was ≈ 5 % of the loop's time under batch ingest (py-spy)."""
    return rows if isinstance(rows, list) else list(rows)


def _decision_row(d: Any) -> tuple:
    """``(msg_id, shop_id, conversation_id, action, agent_id, cause, skill, priority, body)`` of
    a decision: a ``Decision`` (in-process callers) or the map it crossed the pipe as (the same
    fields in the same order, so the same JSON body)."""
    if isinstance(d, dict):
        return (d["msg_id"], d["shop_id"], d["conversation_id"], d["action"], d["agent_id"], d["cause"],
                d["skill"], d["priority"], _encode_json(d))
    return (d.msg_id, d.shop_id, d.conversation_id, d.action, d.agent_id, d.cause, d.skill, d.priority,
            _encode_json(d))


@functools.cache
def _multi_row(head: str, columns: int, rows: int, tail: str = "") -> str:
    marks = "(" + ", ".join("?" * columns) + ")"
    return head + ", ".join([marks] * rows) + tail


def _insert_rows(conn: sqlite3.Connection, head: str, rows: list[tuple], tail: str = "") -> None:
    """Insert ``rows`` with multi-row ``VALUES`` statements: one statement step per chunk
    instead of one per row (``executemany``)."""
    columns = len(rows[0])
    i = 0
    for size in _CHUNKS:
        while len(rows) - i >= size:
            conn.execute(_multi_row(head, columns, size, tail), [v for row in rows[i:i + size] for v in row])
            i += size


def write_rows(conn: sqlite3.Connection, rows: list[tuple]) -> dict[int, int]:
    """Write one batch of :func:`flat_rows`: journal entries, their decisions, the conversations
    they touch, replies for the outbox, order context, and snapshots of the routing state (the
    newest two are kept). Returns the outbox ids of reply rows by their index in ``rows``."""
    journal: list[tuple] = []
    decisions: list[tuple] = []
    convs: dict[str, tuple] = {}
    ids: dict[int, int] = {}
    for index, row in enumerate(rows):
        kind = row[0]
        if kind in _JOURNAL_KINDS:
            _, seq, clock, shop_id, msg_id, cid, body, decs = row
            journal.append((seq, kind, clock, shop_id, msg_id, cid, body))
            for d_msg, d_shop, d_cid, action, agent_id, cause, skill, priority, d_body in map(_decision_row, decs):
                decisions.append((seq, d_msg, d_shop, d_cid, action, agent_id, cause, d_body))
                convs[d_cid] = (d_cid, d_shop, d_cid.split(":", 1)[1], action, agent_id, skill, priority, seq)
            if kind == "event" and body is not None and CLOSE_EVENT in body and cid:
                convs[cid] = (cid, shop_id, cid.split(":", 1)[1], "closed", None, None, 0, seq)
        elif kind == "reply":
            _, shop_id, cid, buyer_id, agent_id, text, ts = row
            cur = conn.execute(
                "INSERT INTO outbox (shop_id, conversation_id, buyer_id, agent_id, text, ts, next_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (shop_id, cid, buyer_id, agent_id, text, ts, ts))
            ids[index] = cur.lastrowid  # type: ignore[assignment]
        elif kind == "snapshot":
            _, seq, created, fp, fmt, body = row
            conn.execute("INSERT OR REPLACE INTO snapshots (seq, created, fingerprint, format, body) VALUES (?, ?, ?, ?, ?)",
                         (seq, created, fp, fmt, body))
            conn.execute("DELETE FROM snapshots WHERE seq < (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT 1 OFFSET 1)")
        elif kind == "orders":
            # Merged into what is stored (json_patch: the fields given win, the others stay): a
            # push or a message naming an older order with a field or two must not erase its
            # goods, courier or tracking number (the buyer's story, router/storage/story.py).
            conn.executemany(
                "INSERT INTO orders (shop_id, order_id, buyer_id, body, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(shop_id, order_id) DO UPDATE SET buyer_id = excluded.buyer_id, "
                "body = json_patch(orders.body, excluded.body), updated = excluded.updated", row[1])
    if journal:
        _insert_rows(conn, _JOURNAL, journal)
    if decisions:
        _insert_rows(conn, _DECISIONS, decisions)
    if convs:
        _insert_rows(conn, _CONVERSATIONS[0], list(convs.values()), _CONVERSATIONS[1])
    return ids


# -- the parent ----------------------------------------------------------------------------------


class JournalWriter:
    """The parent's end: :meth:`submit` a batch of journal rows, get ``done(outbox_ids, error)``
    on the event loop once the child has committed (or refused) it, in submission order."""

    def __init__(self, path: str | os.PathLike[str], on_exit: Callable[[str], None] | None = None,
                 on_transaction: Callable[[], None] | None = None, wal_restart_pages: int | None = None) -> None:
        """``on_exit(reason)``: the child exited unasked; ``on_transaction()``: the child answered
        one transaction (one group commit, however many batches it held); ``wal_restart_pages``:
        see :data:`WAL_RESTART_PAGES` (tests make it small)."""
        self.path = os.fspath(path)
        self.wal_restart_pages = wal_restart_pages or WAL_RESTART_PAGES
        self.on_exit = on_exit
        self.on_transaction = on_transaction
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Future | None = None  # done when the answers' pipe closes
        self._pending: collections.deque[tuple[int, Callable[[Any, BaseException | None], None] | None]] = collections.deque()
        self._next_id = 0
        self._dead: BaseException | None = None
        self._idle: asyncio.Event | None = None
        self._closing = False

    async def start(self) -> None:
        # The child runs this very module from the tree the parent imported it from (not
        # whatever ``router`` the child's sys.path would find first).
        root = os.fspath(Path(__file__).resolve().parents[2])
        code = f"import sys; sys.path.insert(0, {root!r}); from router.storage.writer import child; sys.exit(child({self.path!r}, wal_restart_pages={self.wal_restart_pages}))"
        read_fd, write_fd = os.pipe()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, stdin=asyncio.subprocess.PIPE, stdout=write_fd)
        finally:
            os.close(write_fd)
        self._idle = asyncio.Event()
        self._idle.set()
        loop = asyncio.get_running_loop()
        self._reader = loop.create_future()
        await loop.connect_read_pipe(lambda: _Answers(self), os.fdopen(read_fd, "rb", buffering=0))

    def submit(self, rows: list[tuple], done: Callable[[Any, BaseException | None], None] | None = None) -> None:
        """Queue ``rows`` (:func:`flat_rows`) for the child's next group commit."""
        if self._dead is not None or self._proc is None or self._proc.stdin is None:
            if done is not None:
                done(None, self._dead or StoreClosed("the journal writer is not running"))
            return
        self._next_id += 1
        self._pending.append((self._next_id, done))
        assert self._idle is not None
        self._idle.clear()
        self._proc.stdin.write(_frame((self._next_id, rows)))

    async def flush(self) -> None:
        """Wait until every batch submitted so far is answered."""
        if self._idle is not None and self._pending and self._dead is None:
            await self._idle.wait()

    async def close(self) -> None:
        """Let the child commit what it has, then stop it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._closing = True
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.write(_frame(None))
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            await self._reader
        self._fail_pending(StoreClosed("the journal writer stopped"))

    def _answered(self, answers: list) -> None:
        """One transaction's answers, in the order the batches were submitted."""
        if self.on_transaction is not None:
            self.on_transaction()
        for batch_id, ids, error in answers:
            expected, done = self._pending.popleft()
            if expected != batch_id:
                raise RuntimeError(f"journal writer answered batch {batch_id}, expected {expected}")
            if done is not None:
                try:
                    done(ids, None if error is None else sqlite3.OperationalError(error))
                except Exception:  # noqa: BLE001 - one broken callback must not stop the answers
                    log.exception("journal_callback_failed")
        if not self._pending:
            assert self._idle is not None
            self._idle.set()

    def _ended(self) -> None:
        """The child's end of the pipe closed: asked to (``close``), or it died."""
        if not self._closing:
            self._dead = StoreClosed("the journal writer exited; nothing more can be journaled")
            log.error("journal_writer_exited", pending=len(self._pending))
            if self.on_exit is not None:
                self.on_exit(str(self._dead))
        self._fail_pending(self._dead or StoreClosed("the journal writer stopped"))
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def _fail_pending(self, error: BaseException) -> None:
        while self._pending:
            _, done = self._pending.popleft()
            if done is not None:
                with contextlib.suppress(Exception):
                    done(None, error)
        if self._idle is not None:
            self._idle.set()


class _Answers(asyncio.Protocol):
    """The parent's read end of the child's answers. Frames are handled in ``data_received``,
    the callback that reads them: with a ``StreamReader`` the answers waited one more turn of
    the event loop (the reader task's wake-up) before any caller was told, and under load a turn
    is milliseconds of other requests' work (bench/bench_latency.py)."""

    def __init__(self, writer: JournalWriter) -> None:
        self.writer = writer
        self.buffer = bytearray()
        self.transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        start = 0
        try:
            while len(buffer) - start >= 4:
                end = start + 4 + _HEADER.unpack_from(buffer, start)[0]
                if len(buffer) < end:
                    break
                answers = msgspec.msgpack.decode(buffer[start + 4:end])
                start = end
                self.writer._answered(answers)
        except Exception as exc:  # noqa: BLE001 - the pipe cannot be trusted after this
            log.error("journal_writer_protocol_error", error=str(exc))
            self.buffer.clear()
            assert self.transport is not None
            self.transport.close()  # connection_lost: the writer is failed
            return
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.writer._ended()


# -- the child -----------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the parent dies (a ``kill -9`` included)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _leave_signals_to_the_parent() -> None:
    """Ignore the Ctrl-C and ``SIGTERM`` sent to the whole process group (a terminal, systemd):
    the service drains and commits what it holds, then closes the pipe, and the child exits at
    the end of its input. Dying on the signal would lose that drain and print a traceback."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_IGN)


def _yield_to_the_event_loop() -> None:
    """Run as a batch (throughput) task on Linux: same CPU share, but waking up does not preempt
    the running task. Otherwise every batch the event loop hands over wakes the child onto the
    loop's own CPU and stalls the loop for the child's time slice (py-spy showed ≈ 10 % of the
    loop's time inside the pipe write under load; ≈ 2.5 % after)."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_BATCH"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int) -> Any:
    """The next frame's payload; raises ``EOFError`` at the end of input."""
    head = _read_exact(fd, 4)
    if head is None:
        raise EOFError
    body = _read_exact(fd, _HEADER.unpack(head)[0])
    if body is None:
        raise EOFError
    return msgspec.msgpack.decode(body)


def _write_frame(fd: int, payload: Any) -> None:
    view = memoryview(_frame(payload))
    while view:
        view = view[os.write(fd, view):]


#: Batches and rows one transaction takes at most: a burst waiting in the pipe is committed in a
#: few bounded transactions, each answered as soon as it is durable, instead of one long one that
#: holds every caller in it until its last row is written.
MAX_GROUP_BATCHES = 64
MAX_GROUP_ROWS = 4096
#: A transaction slower than this is logged with its size and the WAL's (the writer's own timings).
SLOW_COMMIT_S = 0.05
#: Checkpoint pacing (:class:`_Checkpointer`): the thread passes again soon while the WAL holds
#: frames (not at once: a pass that copies syncs the WAL and the database), and idles this long
#: once the WAL has started over.
CHECKPOINT_IDLE_S = 0.1
CHECKPOINT_BUSY_S = 0.02
#: A WAL this long (4 KiB pages) is made to start over (:meth:`_Checkpointer.finish_up`) once the
#: thread has copied everything but the last transaction; at eight times this the writer copies
#: the rest whatever it costs (the thread cannot keep up), so the WAL stays bounded.
WAL_RESTART_PAGES = 2048
#: A WAL file longer than this many restart lengths is cut back to it when it starts over (it
#: keeps its largest size otherwise: one slow checkpoint would leave a large file for good).
JOURNAL_SIZE_RESTARTS = 2


class _Checkpointer(threading.Thread):
    """Copies the WAL into the database on its own thread and connection, with PASSIVE
    checkpoints (they never block the writer), so no commit pays for a checkpoint.

    With SQLite's automatic checkpoints the commit that crossed the threshold copied the whole
    WAL (tens of MB under load) before its batch was answered: the stalls of 180–270 ms in
    issue 22. The writer turns them off, and this thread keeps up with it. A WAL restarts from its
    beginning only when every frame is copied, which a concurrent checkpoint never sees under
    steady writes; :meth:`finish_up` has the writer copy the frames of its last transaction
    itself, between transactions, once the WAL is long.

    While the WAL is shorter than ``restart_pages`` the thread also holds a read transaction
    open (:meth:`_hold`), so the WAL does *not* start over each time the thread has caught up.
    Each start-over costs the next commit a sync of the WAL's new header (SQLite syncs it
    whatever ``synchronous`` says): with the thread catching up between commits that was
    several syncs a second on the commit path, 2-30 ms each on this VM's disk (perf trace). Now
    the WAL starts over once every ``restart_pages`` pages."""

    def __init__(self, path: str, restart_pages: int = WAL_RESTART_PAGES) -> None:
        super().__init__(name="fenliu-checkpoint", daemon=True)
        self.path = path
        self.restart_pages = restart_pages
        self.size_limit = JOURNAL_SIZE_RESTARTS * restart_pages * 4096
        self.transactions = 0  # committed by the writer (it counts them)
        self.copied_through = 0  # every transaction up to this one is in the database
        self.wal_pages = 0  # frames in the WAL at the last checkpoint
        self._stop_event = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        readers = [sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
                   for _ in range(2)]
        try:
            conn.execute(f"PRAGMA journal_size_limit={self.size_limit}")
            pause, seen = CHECKPOINT_IDLE_S, -1
            while not self._stop_event.wait(pause):
                self.step(conn, readers)
                # again soon while the WAL grows; idle once nothing new came in
                pause = CHECKPOINT_BUSY_S if self.wal_pages and self.wal_pages != seen else CHECKPOINT_IDLE_S
                seen = self.wal_pages
        finally:
            for reader in readers:
                reader.close()
            conn.close()

    def step(self, conn: sqlite3.Connection, readers: list[sqlite3.Connection]) -> None:
        """One pass of the thread: a checkpoint, with a fresh reader held while the WAL is short
        (and held again, or let go, at once when the checkpoint finds it has started over or
        grown long)."""
        self._hold(readers)
        self.checkpoint(conn, self.transactions)
        if (self.wal_pages >= self.restart_pages) == any(r.in_transaction for r in readers):
            self._hold(readers)

    def _hold(self, readers: list[sqlite3.Connection]) -> None:
        """While the WAL is short, a read transaction stays open on one of ``readers`` (a fresh
        one, opened before the older is closed, so there is no moment without one): SQLite starts
        a WAL over only when no reader is in it. Once the WAL is long, none is held."""
        fresh, old = readers
        try:
            if self.wal_pages < self.restart_pages:
                if fresh.in_transaction:
                    fresh.execute("COMMIT")
                fresh.execute("BEGIN")
                fresh.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # takes the read lock
                readers.reverse()  # the fresh one is the older next time
            if old.in_transaction:
                old.execute("COMMIT")
            if self.wal_pages >= self.restart_pages and fresh.in_transaction:
                fresh.execute("COMMIT")
        except sqlite3.Error as exc:
            log.warning("wal_reader_failed", error=str(exc))

    def checkpoint(self, conn: sqlite3.Connection, through: int) -> None:
        try:
            _busy, pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("wal_checkpoint_failed", error=str(exc))
            return
        if pages >= 0:  # -1: another checkpoint was running
            self.wal_pages = pages
            if copied == pages:
                self.copied_through = max(self.copied_through, through)

    def finish_up(self, conn: sqlite3.Connection, waiting: Callable[[], bool] = lambda: False) -> None:
        """On the writer, after answering a transaction: a long WAL whose frames the thread has
        copied up to the previous transaction is copied to its end (this transaction's frames),
        so the next transaction starts it over. Not while a batch already waits in the pipe
        (``waiting()``, asked only of a long WAL): the copy took 10–35 ms on a busy disk, and
        that batch's callers would wait for it; the next gap does it, and a WAL eight times too
        long is copied anyway."""
        if self.wal_pages < self.restart_pages:
            return
        if self.wal_pages >= 8 * self.restart_pages or (
                self.copied_through >= self.transactions - 1 and not waiting()):
            self.checkpoint(conn, self.transactions)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


def _waiting(fd: int) -> bool:
    """Whether input is waiting in ``fd`` (without reading it)."""
    return bool(select.select([fd], [], [], 0)[0])


def _read_group(fd_in: int) -> tuple[list[tuple[int, list]], bool]:
    """The batches waiting in the pipe, up to the group's bounds; and whether input ended."""
    try:
        first = _read_frame(fd_in)
    except EOFError:
        return [], True
    if first is None:
        return [], True
    batches: list[tuple[int, list]] = [first]
    rows = len(first[1])
    while len(batches) < MAX_GROUP_BATCHES and rows < MAX_GROUP_ROWS and _waiting(fd_in):
        try:
            nxt = _read_frame(fd_in)
        except EOFError:
            return batches, True
        if nxt is None:
            return batches, True
        batches.append(nxt)
        rows += len(nxt[1])
    return batches, False


def _commit_group(conn: sqlite3.Connection, batches: list[tuple[int, list]]) -> list:
    answers: list[tuple[int, dict[int, int] | None, str | None]] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for batch_id, rows in batches:
            conn.execute("SAVEPOINT batch")
            try:
                ids = write_rows(conn, rows)
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK TO batch")
                conn.execute("RELEASE batch")
                answers.append((batch_id, None, f"{type(exc).__name__}: {exc}"))
                continue
            conn.execute("RELEASE batch")
            answers.append((batch_id, ids, None))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        answers = [(batch_id, None, f"commit failed: {exc}") for batch_id, _ in batches]
    return answers


def child(path: str, fd_in: int = 0, fd_out: int = 1, wal_restart_pages: int = WAL_RESTART_PAGES) -> int:
    """Serve batches from ``fd_in`` until a ``None`` frame or the end of input."""
    _die_with_parent()
    _leave_signals_to_the_parent()
    _yield_to_the_event_loop()
    if fd_out == 1:  # stdout is the protocol's pipe: log lines go to stderr
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    conn = connect(path)
    conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job, off the commit path
    # Savepoint and statement journals in memory: each batch's SAVEPOINT and each multi-row
    # upsert keep the pages they change for a rollback, and past 64 KiB SQLite spilled them to a
    # new file in /var/tmp (created, written, unlinked: metadata the disk's journal commits).
    # Under load that was several files a transaction, their writes 2-8 ms each on this VM's disk
    # (perf trace). They only serve a rollback inside an open transaction, so a crash loses
    # nothing a commit made durable.
    conn.execute("PRAGMA temp_store=MEMORY")
    checkpointer = _Checkpointer(path, wal_restart_pages)
    conn.execute(f"PRAGMA journal_size_limit={checkpointer.size_limit}")
    checkpointer.start()
    clock = time.perf_counter
    waiting = functools.partial(_waiting, fd_in)
    stop = False
    try:
        while not stop:
            batches, stop = _read_group(fd_in)
            if not batches:
                continue
            began = clock()
            answers = _commit_group(conn, batches)
            checkpointer.transactions += 1
            _write_frame(fd_out, answers)
            took = clock() - began
            if took >= SLOW_COMMIT_S:
                log.warning("journal_commit_slow", ms=round(took * 1000, 1), batches=len(batches),
                            rows=sum(len(rows) for _, rows in batches), wal_pages=checkpointer.wal_pages)
            checkpointer.finish_up(conn, waiting)
    finally:
        checkpointer.stop()
        conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(child(sys.argv[1]))
