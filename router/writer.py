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
restarted service never races a writer left behind by a killed one. ``python -m router.writer
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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import structlog

from router.store import StoreClosed, connect

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
    """The service's journal rows with their ``Decision`` structs turned into plain tuples
    ``(msg_id, shop_id, conversation_id, action, agent_id, cause, skill, priority, body)``, so
    a batch can cross a pipe and be written without the router's models."""
    out: list[tuple] = []
    for row in rows:
        if row[0] in _JOURNAL_KINDS:
            kind, seq, clock, shop_id, msg_id, cid, body, decs = row
            out.append((kind, seq, clock, shop_id, msg_id, cid, body,
                        [(d.msg_id, d.shop_id, d.conversation_id, d.action, d.agent_id, d.cause, d.skill, d.priority,
                          _encode_json(d)) for d in decs]))
        else:
            out.append(row)
    return out


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
            for d_msg, d_shop, d_cid, action, agent_id, cause, skill, priority, d_body in decs:
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
            # goods, courier or tracking number (the buyer's story, router/story.py).
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
                 on_transaction: Callable[[], None] | None = None) -> None:
        """``on_exit(reason)``: the child exited unasked; ``on_transaction()``: the child answered
        one transaction (one group commit, however many batches it held)."""
        self.path = os.fspath(path)
        self.on_exit = on_exit
        self.on_transaction = on_transaction
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None
        self._pending: collections.deque[tuple[int, Callable[[Any, BaseException | None], None] | None]] = collections.deque()
        self._next_id = 0
        self._dead: BaseException | None = None
        self._idle: asyncio.Event | None = None
        self._closing = False

    async def start(self) -> None:
        # The child runs this very module from the tree the parent imported it from (not
        # whatever ``router`` the child's sys.path would find first).
        root = os.fspath(Path(__file__).resolve().parent.parent)
        code = f"import sys; sys.path.insert(0, {root!r}); from router.writer import child; sys.exit(child({self.path!r}))"
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        self._idle = asyncio.Event()
        self._idle.set()
        self._reader = asyncio.create_task(self._read_answers(), name="fenliu-journal-writer")

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

    async def _read_answers(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        try:
            while True:
                head = await stdout.readexactly(4)
                answers = msgspec.msgpack.decode(await stdout.readexactly(_HEADER.unpack(head)[0]))
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
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as exc:  # noqa: BLE001
            log.error("journal_writer_protocol_error", error=str(exc))
        if not self._closing:
            self._dead = StoreClosed("the journal writer exited; nothing more can be journaled")
            log.error("journal_writer_exited", pending=len(self._pending))
            if self.on_exit is not None:
                self.on_exit(str(self._dead))
        self._fail_pending(self._dead or StoreClosed("the journal writer stopped"))

    def _fail_pending(self, error: BaseException) -> None:
        while self._pending:
            _, done = self._pending.popleft()
            if done is not None:
                with contextlib.suppress(Exception):
                    done(None, error)
        if self._idle is not None:
            self._idle.set()


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


def child(path: str, fd_in: int = 0, fd_out: int = 1) -> int:
    """Serve batches from ``fd_in`` until a ``None`` frame or the end of input."""
    _die_with_parent()
    _leave_signals_to_the_parent()
    _yield_to_the_event_loop()

    conn = connect(path)
    stop = False
    while not stop:
        try:
            first = _read_frame(fd_in)
        except EOFError:
            break
        batches: list[tuple[int, list]] = []
        if first is None:
            stop = True
        else:
            batches.append(first)
        while not stop and len(batches) < 256 and select.select([fd_in], [], [], 0)[0]:
            try:
                nxt = _read_frame(fd_in)
            except EOFError:
                stop = True
                break
            if nxt is None:
                stop = True
            else:
                batches.append(nxt)
        if not batches:
            continue
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
        _write_frame(fd_out, answers)
    conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(child(sys.argv[1]))
