"""The journal writer process (router/storage/writer.py): batches committed in order, a refused batch
does not sink the others, nothing is answered before it is in the file, a dead writer fails its
callers instead of hanging them, and the writer never outlives a killed service."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from router.core.models import Decision
from router.storage.store import StoreClosed, connect
from router.storage.writer import JournalWriter, _Answers, _Checkpointer, _frame, flat_rows, write_rows
from tests.conftest import ROOT

pytestmark = pytest.mark.anyio


def _rows(first_seq: int, count: int, shop: str = "pdd-1001") -> list[tuple]:
    out = []
    for seq in range(first_seq, first_seq + count):
        cid = f"{shop}:b{seq % 7}"
        d = Decision(f"m{seq}", shop, cid, "queued", skill="presale", cause="new")
        out.append(("message", seq, 1000.0 + seq, shop, f"m{seq}", cid, b'{"text":"\xe5\x9c\xa8\xe5\x90\x97"}', [d]))
    return out


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "w.db"
    connect(path).close()
    return path


async def test_batches_are_committed_and_answered_in_order(db: Path):
    writer = JournalWriter(db)
    await writer.start()
    answers: list[tuple[int, object]] = []
    sizes = [1, 3, 300, 17, 64]
    seq = 1
    for i, n in enumerate(sizes):
        writer.submit(flat_rows(_rows(seq, n)), lambda ids, err, i=i: answers.append((i, err)))
        seq += n
    writer.submit([("reply", "pdd-1001", "pdd-1001:b1", "b1", "a1", "亲，在的", 5.0)],
                  lambda ids, err: answers.append((99, ids)))
    await writer.flush()
    assert answers == [(0, None), (1, None), (2, None), (3, None), (4, None), (99, {0: 1})]
    await writer.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*), min(seq), max(seq) FROM journal").fetchone() == (sum(sizes), 1, sum(sizes))
    assert conn.execute("SELECT count(*) FROM decisions").fetchone() == (sum(sizes),)
    assert conn.execute("SELECT count(*) FROM conversations").fetchone() == (7,)
    assert conn.execute("SELECT text FROM outbox").fetchone() == ("亲，在的",)
    # Bodies are stored as they were sent (bytes in, bytes out).
    assert conn.execute("SELECT body FROM journal WHERE seq = 2").fetchone()[0] == '{"text":"在吗"}'.encode()


async def test_transactions_are_counted_once_however_many_batches_they_hold(db: Path):
    """``on_transaction`` (the service's ``fenliu_store_commits_total``) counts group commits,
    not batches: batches submitted back to back share transactions."""
    transactions: list[int] = []
    answered: list[int] = []
    writer = JournalWriter(db, on_transaction=lambda: transactions.append(len(answered)))
    await writer.start()
    for i in range(20):
        writer.submit(flat_rows(_rows(1 + i * 3, 3)), lambda ids, err, i=i: answered.append(i))
    await writer.flush()
    await writer.close()
    assert answered == list(range(20))
    assert 1 <= len(transactions) < 20
    assert sqlite3.connect(db).execute("SELECT count(*) FROM journal").fetchone() == (60,)


async def test_a_refused_batch_does_not_sink_the_others(db: Path):
    writer = JournalWriter(db)
    await writer.start()
    results: list[object] = []
    writer.submit(flat_rows(_rows(1, 5)), lambda ids, err: results.append(err))
    writer.submit(flat_rows(_rows(3, 2)), lambda ids, err: results.append(err))  # seq 3 and 4 again
    writer.submit(flat_rows(_rows(6, 5)), lambda ids, err: results.append(err))
    await writer.flush()
    await writer.close()
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], sqlite3.Error) and "UNIQUE" in str(results[1])
    assert sqlite3.connect(db).execute("SELECT count(*) FROM journal").fetchone() == (10,)


async def test_a_dead_writer_fails_waiting_and_later_batches(db: Path):
    writer = JournalWriter(db)
    await writer.start()
    assert writer._proc is not None
    writer._proc.kill()
    await writer._proc.wait()
    failed: list[object] = []
    writer.submit(flat_rows(_rows(1, 1)), lambda ids, err: failed.append(err))
    await asyncio.sleep(0.2)
    writer.submit(flat_rows(_rows(2, 1)), lambda ids, err: failed.append(err))
    await writer.flush()
    assert len(failed) == 2 and all(isinstance(e, StoreClosed) for e in failed)
    await writer.close()


def test_answers_are_handled_in_the_read_that_completes_their_frame():
    """Frames split across reads, or several in one, are each answered as soon as their last
    byte is read: in the pipe's read callback, not a turn of the event loop later."""
    class Transport:
        closed = False

        def close(self) -> None:
            self.closed = True

    writer = JournalWriter("unused.db")
    writer._idle = asyncio.Event()
    told: list[tuple[int, object]] = []
    for i in range(1, 5):
        writer._pending.append((i, lambda ids, err, i=i: told.append((i, ids))))
    answers = _Answers(writer)
    transport = Transport()
    answers.connection_made(transport)  # type: ignore[arg-type]
    one, two, three = _frame([[1, {}, None]]), _frame([[2, {0: 7}, None], [3, {}, None]]), _frame([[4, {}, None]])
    data = one + two + three
    answers.data_received(data[:3])
    assert told == []
    answers.data_received(data[3:len(one) + 5])
    assert told == [(1, {})]
    answers.data_received(data[len(one) + 5:])
    assert told == [(1, {}), (2, {0: 7}), (3, {}), (4, {})] and not answers.buffer and writer._idle.is_set()
    writer._pending.append((6, None))
    answers.data_received(_frame([[5, {}, None]]))  # out of order: the pipe is not trusted any more
    assert transport.closed


def test_write_rows_matches_the_service_rows(db: Path):
    """``write_rows`` on the flattened rows writes what the service's rows describe; multi-row
    statements cut at every chunk size leave nothing out."""
    conn = connect(db)
    for count in (1, 2, 5, 127, 256, 511):
        start = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM journal").fetchone()[0]
        conn.execute("BEGIN")
        write_rows(conn, flat_rows(_rows(start, count)))
        conn.execute("COMMIT")
        got = [r[0] for r in conn.execute("SELECT seq FROM journal WHERE seq >= ? ORDER BY seq", (start,))]
        assert got == list(range(start, start + count))


def test_a_conversation_row_changes_only_when_its_state_does(db: Path):
    conn = connect(db)
    cid = "pdd-1001:b1"

    def message(seq: int, action: str = "queued", agent: str | None = None, skill: str | None = "presale",
                priority: int = 0) -> tuple:
        d = Decision(f"m{seq}", "pdd-1001", cid, action, agent_id=agent, skill=skill, priority=priority)
        return ("message", seq, 1000.0 + seq, "pdd-1001", f"m{seq}", cid, b"{}", [d])

    def row() -> tuple:
        return conn.execute("SELECT state, agent_id, skill, priority, updated_seq FROM conversations").fetchone()

    write_rows(conn, flat_rows([message(1)]))
    write_rows(conn, flat_rows([message(2), message(3, skill=None)]))  # a follow-up, nothing moved
    assert row() == ("queued", None, "presale", 0, 1)
    write_rows(conn, flat_rows([message(4, priority=20)]))
    assert row() == ("queued", None, "presale", 20, 4)
    write_rows(conn, flat_rows([message(5, "assigned", "a-01", priority=20)]))
    assert row() == ("assigned", "a-01", "presale", 20, 5)
    write_rows(conn, flat_rows([message(6, "assigned", "a-01", "aftersale", priority=20)]))
    assert row() == ("assigned", "a-01", "aftersale", 20, 6)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped by whoever adopted it counts as dead)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def test_the_writer_dies_with_a_killed_service(tmp_path: Path, db: Path):
    """A ``kill -9`` of the service must take the writer with it: a restarted service would
    otherwise race a writer left behind."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only; elsewhere the writer stops at the end of its input")
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from router.storage.writer import JournalWriter

        async def main():
            w = JournalWriter({str(db)!r})
            await w.start()
            open({str(pid_file)!r}, "w").write(str(w._proc.pid))
            await asyncio.sleep(60)

        asyncio.run(main())
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(200):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        for _ in range(100):
            if not _alive(child):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the writer (pid {child}) outlived its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux-only")
async def test_the_child_runs_as_a_batch_task_so_it_does_not_preempt_the_event_loop(db: Path):
    writer = JournalWriter(db)
    await writer.start()
    try:
        assert writer._proc is not None
        pid = writer._proc.pid
        for _ in range(100):  # the child sets its policy first thing; give it a moment
            if os.sched_getscheduler(pid) == os.SCHED_BATCH:
                break
            await asyncio.sleep(0.02)
        assert os.sched_getscheduler(pid) == os.SCHED_BATCH
    finally:
        await writer.close()


async def test_the_wal_is_checkpointed_off_the_commit_path_and_starts_over(db: Path):
    """The writer turns SQLite's automatic checkpoints off (a commit that ran one held every
    caller in it for hundreds of ms): its checkpointer thread copies the WAL, the WAL starts over
    and its file is cut back to the size limit, so it does not grow with what was written."""
    writer = JournalWriter(db, wal_restart_pages=128)
    await writer.start()
    body = b'{"text":"' + b"x" * 1000 + b'"}'
    written, seq = 0, 1
    answered: list[object] = []

    def submit(count: int) -> None:
        nonlocal seq, written
        rows = [("message", s, 1000.0 + s, "pdd-1001", f"m{s}", f"pdd-1001:b{s}", body, []) for s in range(seq, seq + count)]
        writer.submit(flat_rows(rows), lambda ids, err: answered.append(err))
        seq += count
        written += count * len(body)

    while written < 128 * 4096 * 24:
        submit(20)
        await asyncio.sleep(0.001)
    await writer.flush()
    await asyncio.sleep(0.5)  # the thread catches up; the next transaction starts the WAL over
    submit(1)
    await writer.flush()
    wal = db.with_name(db.name + "-wal").stat().st_size
    await writer.close()
    assert answered and all(err is None for err in answered)
    assert sqlite3.connect(db).execute("SELECT count(*) FROM journal").fetchone() == (seq - 1,)
    assert wal <= 2 * 128 * 4096 + 64 * 1024, f"WAL {wal:,} bytes after writing {written:,}: it never started over"


def test_the_writer_leaves_the_wal_restart_to_a_gap_when_a_batch_waits(db: Path):
    """The writer's own copy of a long WAL (``finish_up``) would hold up a batch already
    waiting in the pipe: it is left to the next gap, unless the WAL is eight times too long."""
    conn = connect(db)
    conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    ckpt = _Checkpointer(str(db), restart_pages=16)
    ckpt.transactions = ckpt.copied_through = 5

    ckpt.wal_pages = 16  # long enough to start over, and everything but the last copied
    ckpt.finish_up(conn, waiting=lambda: True)
    assert ckpt.wal_pages == 16, "a waiting batch was made to wait for the copy"
    ckpt.finish_up(conn, waiting=lambda: False)
    assert ckpt.wal_pages < 16, "in a gap the WAL is copied to its end"

    ckpt.wal_pages = 8 * 16
    ckpt.finish_up(conn, waiting=lambda: True)
    assert ckpt.wal_pages < 16, "a WAL eight times too long is copied even while a batch waits"
    conn.close()


def test_the_wal_starts_over_only_once_it_is_long(db: Path):
    """Each time the WAL starts over, the commit that does it syncs the WAL's new header. The
    checkpointer holds a reader in the WAL while it is short, so catching up between commits
    does not make every next commit start it over; once it is long, it lets go."""
    conn = connect(db)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    ckpt = _Checkpointer(str(db), restart_pages=64)
    side = sqlite3.connect(db, isolation_level=None)
    readers = [sqlite3.connect(db, isolation_level=None) for _ in range(2)]
    wal = db.with_name(db.name + "-wal")

    def salt() -> bytes:  # changes each time the WAL starts over
        return wal.read_bytes()[16:24]

    def one_pass() -> None:  # what the thread does each time round
        ckpt.step(side, readers)

    conn.execute("INSERT INTO t VALUES (?)", (b"x" * 100,))
    one_pass()
    first, salts = salt(), set()
    while ckpt.wal_pages < ckpt.restart_pages:
        conn.execute("INSERT INTO t VALUES (?)", (b"x" * 100,))
        salts.add(salt())
        one_pass()
        assert ckpt.wal_pages > 0
    assert salts == {first}, "the WAL started over while it was short"
    assert not any(r.in_transaction for r in readers), "a long WAL is left free to start over"
    conn.execute("INSERT INTO t VALUES (?)", (b"x" * 100,))
    assert salt() != first, "the long, copied WAL did not start over"
    one_pass()
    assert any(r.in_transaction for r in readers), "the short WAL is held again"
    for c in (conn, side, *readers):
        c.close()
