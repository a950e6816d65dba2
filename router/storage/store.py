"""The embedded store: one SQLite file in WAL mode, written by one thread with group commit.

Durability rests on a journal: every input the router processed (a message, an event, a clock
tick that moved something) is a row with a sequence number and the clock value the router used,
written in the same transaction as the decisions it caused. The router is deterministic given its
inputs and clock values, so the service rebuilds its in-memory state on start by replaying the
journal through a fresh router. Tables beside the journal (decisions, conversations,
accounts, buyer profiles, the outbox) are what people and tools query.

Nothing here runs on the event loop: :class:`Store` owns a writer thread that takes jobs (plain
functions of a ``sqlite3.Connection``), runs every job queued so far in one transaction (each in
its own savepoint, so one failing job does not undo the others), commits once, and only then
resolves the jobs' futures. An HTTP handler awaiting its future therefore answers ``202`` only
for committed messages, and a burst of requests costs one commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("fenliu.store")

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,              -- message | event | tick | faults (hook results a message dropped)
    clock REAL NOT NULL,             -- the router's clock when it processed the input
    shop_id TEXT,
    msg_id TEXT,
    conversation_id TEXT,
    body BLOB                        -- msgspec JSON of the Message or Event
);
CREATE UNIQUE INDEX IF NOT EXISTS journal_msg ON journal (shop_id, msg_id) WHERE kind = 'message';
CREATE VIEW IF NOT EXISTS messages AS
    SELECT seq, shop_id, msg_id, conversation_id, clock, body FROM journal WHERE kind = 'message';
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,            -- the journal entry that caused it
    msg_id TEXT,
    shop_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    action TEXT NOT NULL,
    agent_id TEXT,
    cause TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_seq ON decisions (seq);
-- Indexes on random keys (conversation ids, message ids) cost a page write per row and commit;
-- the service needs only the journal's idempotency index and the append-ordered ones. Ad-hoc
-- queries by conversation can add their own index (docs/service.md, "The store").
DROP INDEX IF EXISTS journal_conv;
DROP INDEX IF EXISTS decisions_msg;
DROP INDEX IF EXISTS decisions_conv;
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    shop_id TEXT NOT NULL,
    buyer_id TEXT NOT NULL,
    state TEXT NOT NULL,             -- bot | queued | reserved | assigned | closed
    agent_id TEXT,
    skill TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    reserved_until REAL,
    updated_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,           -- "main" or "main:sub" (主账号 / 子账号)
    main TEXT,                       -- the main account of a sub-account
    role TEXT NOT NULL,
    shops TEXT NOT NULL,             -- JSON list; ["*"] for all
    agent_id TEXT,
    password_hash TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0  -- 1: no login, its tokens and sockets refused
);
CREATE TABLE IF NOT EXISTS profiles (
    shop_id TEXT NOT NULL,
    buyer_id TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    notes TEXT NOT NULL DEFAULT '[]',
    updated REAL NOT NULL,
    PRIMARY KEY (shop_id, buyer_id)
);
CREATE TABLE IF NOT EXISTS orders (
    shop_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    buyer_id TEXT,
    body TEXT NOT NULL,              -- JSON of router.core.models.Order
    updated REAL NOT NULL,
    PRIMARY KEY (shop_id, order_id)
);
-- The buyer's story (router/storage/story.py): a buyer's orders, their parcel scans, after-sale requests.
CREATE INDEX IF NOT EXISTS orders_buyer ON orders (shop_id, buyer_id);
CREATE TABLE IF NOT EXISTS logistics (
    shop_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    ts REAL NOT NULL,
    text TEXT NOT NULL,
    status TEXT,                     -- collected | in_transit | delivering | signed | problem
    PRIMARY KEY (shop_id, order_id, ts, text)
);
CREATE TABLE IF NOT EXISTS aftersales (
    shop_id TEXT NOT NULL,
    aftersale_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    buyer_id TEXT,                   -- when known; else the order's buyer
    state TEXT NOT NULL,
    open INTEGER NOT NULL,           -- 0 once refunded, refused or closed
    body TEXT NOT NULL,              -- JSON of router.core.models.AfterSale
    updated REAL NOT NULL,
    PRIMARY KEY (shop_id, aftersale_id)
);
CREATE INDEX IF NOT EXISTS aftersales_open ON aftersales (shop_id, updated) WHERE open = 1;
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY,
    shop_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    agent_id TEXT,
    text TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS violations (  -- forbidden words in refused replies: 客服质检 per agent and category
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    shop_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    agent_id TEXT,
    word TEXT NOT NULL,
    tag TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    shop_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    buyer_id TEXT NOT NULL,
    agent_id TEXT,
    text TEXT NOT NULL,
    ts REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    acked REAL,                      -- when the shop's channel acknowledged it
    failed TEXT                      -- last error, for operators
);
CREATE TABLE IF NOT EXISTS snapshots (
    seq INTEGER PRIMARY KEY,         -- the last journal entry the routing state includes
    created REAL NOT NULL,
    fingerprint TEXT NOT NULL,       -- configuration, Fenliu and plugins it was taken under
    format INTEGER NOT NULL,
    body BLOB NOT NULL               -- router/storage/snapshot.py
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (next_at) WHERE acked IS NULL;
CREATE INDEX IF NOT EXISTS outbox_conv ON outbox (conversation_id);
"""


def read_only(path: str | Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection that only reads: it takes no write lock, so the journal writer never waits
    for it (:meth:`Store.call` runs in a write transaction)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=check_same_thread)


class StoreClosed(RuntimeError):
    """The store was closed while a job waited."""


#: Pages of WAL (4 KiB each) after which a committing connection checkpoints.
WAL_CHECKPOINT_PAGES = 8000


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (and create) the database with the pragmas the service relies on."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(p, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a commit survives a process crash (kill -9); only an OS crash or power
    # loss can drop the last transactions.
    conn.execute("PRAGMA synchronous=NORMAL")
    # Checkpoint every ≈ 32 MB of WAL instead of SQLite's 4 MB: the random-key index pages a
    # sale-day burst rewrites are then copied into the database once per checkpoint rather than
    # eight times, and the journal writer stalls for a checkpoint an eighth as often (interleaved
    # A/B of ingest: +7 % requests/s; docs/service.md).
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(SCHEMA)
    _migrate(conn)
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    """Columns added after a store was first created (``CREATE TABLE IF NOT EXISTS`` keeps an
    old table as it was)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(accounts)")}
    if "disabled" not in columns:
        with contextlib.suppress(sqlite3.OperationalError):  # another process added it first
            conn.execute("ALTER TABLE accounts ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0")


class Store:
    """The SQLite file plus its writer thread. Use :meth:`call` from async code and
    :meth:`run_sync` from command-line tools (no thread needed there)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.conn = connect(self.path)
        self._jobs: queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any], Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0

    # -- synchronous use (CLI, tests) -----------------------------------------------------------

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is not None:
            raise RuntimeError("the writer thread owns the connection; use await store.call()")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self.conn)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result

    # -- the writer thread ----------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="fenliu-store", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[sqlite3.Connection], Any], done: Callable[[Any, BaseException | None], None] | None = None) -> None:
        """Queue ``fn`` for the next group commit; ``done(result, error)`` runs on the event loop
        after the commit (or the rollback of ``fn``)."""
        if self._thread is None:
            raise StoreClosed("store is not running")
        self._jobs.put((fn, done))

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the writer thread's next transaction and return its result once
        committed."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        def done(result: Any, error: BaseException | None) -> None:
            if fut.done():
                return
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

        self.submit(fn, done)
        return await fut

    def _run(self) -> None:
        conn = self.conn
        loop = self._loop
        assert loop is not None
        stop = False
        while not stop:
            first = self._jobs.get()
            jobs = []
            if first is None:
                stop = True
            else:
                jobs.append(first)
            while len(jobs) < 4096:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    continue
                jobs.append(job)
            if not jobs:
                continue
            outcomes: list[tuple[Any, Any, BaseException | None]] = []
            try:
                conn.execute("BEGIN IMMEDIATE")
                for fn, done in jobs:
                    conn.execute("SAVEPOINT job")
                    try:
                        result = fn(conn)
                    except Exception as exc:  # noqa: BLE001 - reported to the job's owner
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                        outcomes.append((done, None, exc))
                        continue
                    conn.execute("RELEASE job")
                    outcomes.append((done, result, None))
                conn.execute("COMMIT")
                self.commits += 1
            except sqlite3.Error as exc:
                log.error("store_commit_failed", error=str(exc), jobs=len(jobs))
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                outcomes = [(done, None, exc) for _, done in jobs]
            callbacks = [(d, r, e) for d, r, e in outcomes if d is not None]
            if callbacks:
                try:
                    loop.call_soon_threadsafe(_finish, callbacks)
                except RuntimeError:
                    return

    async def close(self) -> None:
        """Commit what is queued, stop the thread and close the file."""
        if self._thread is not None:
            self._jobs.put(None)
            thread, self._thread = self._thread, None
            await asyncio.to_thread(thread.join)
        self.conn.close()

    def close_sync(self) -> None:
        if self._thread is not None:
            raise RuntimeError("use await store.close()")
        self.conn.close()


def _finish(callbacks: list[tuple[Callable[[Any, BaseException | None], None], Any, BaseException | None]]) -> None:
    for done, result, error in callbacks:
        try:
            done(result, error)
        except Exception:  # noqa: BLE001 - one broken callback must not starve the rest
            log.exception("store_callback_failed")


# -- small query helpers shared by the service, the CLI and tests ------------------------------


def meta_get(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def meta_set(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                 (key, value))


def last_seq(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchone()[0]


def journal_page(conn: sqlite3.Connection, after: int, limit: int = 5000) -> list[tuple[int, str, float, bytes | None]]:
    return conn.execute(
        "SELECT seq, kind, clock, body FROM journal WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
    ).fetchall()
