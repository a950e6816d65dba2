"""Versioned schema migrations, applied under an advisory lock.

Each migration is a numbered SQL script run once, in its own transaction with its row in
``schema_migrations``. :func:`upgrade` takes ``pg_advisory_lock`` (a session lock, not a
transaction one, so it spans every migration) before it reads what is applied: of several
instances starting together one migrates, the others wait for the lock, then find nothing left
to do. Migrations are append-only: a released one is never edited, a change is a new one.
"""

from __future__ import annotations

from typing import NamedTuple

import psycopg
import structlog

from router.core.i18n import _

log = structlog.get_logger("fenliu.pg")

#: The advisory lock key of Fenliu's migrations (any 64-bit number no other tool uses: b"fenliu" as an int).
LOCK_KEY = 0x66656E6C6975


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "records", """
CREATE TABLE accounts (
    name text PRIMARY KEY,            -- "main" or "main:sub"
    main text,
    role text NOT NULL,
    shops text NOT NULL,              -- JSON list, as in SQLite: router/storage/accounts.py reads both alike
    agent_id text,
    password_hash text NOT NULL,
    generation integer NOT NULL DEFAULT 1,  -- moves on password change or disable: tokens die
    created double precision NOT NULL,
    disabled integer NOT NULL DEFAULT 0
);
CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE profiles (
    shop_id text NOT NULL,
    buyer_id text NOT NULL,
    tags jsonb NOT NULL DEFAULT '[]',
    notes jsonb NOT NULL DEFAULT '[]',
    updated double precision NOT NULL,
    PRIMARY KEY (shop_id, buyer_id)
);
CREATE INDEX profiles_updated ON profiles (updated);
CREATE TABLE notes (
    id bigserial PRIMARY KEY,
    shop_id text NOT NULL,
    conversation_id text NOT NULL,
    agent_id text,
    text text NOT NULL,
    ts double precision NOT NULL
);
CREATE INDEX notes_conversation ON notes (conversation_id);
CREATE TABLE orders (
    shop_id text NOT NULL,
    order_id text NOT NULL,
    buyer_id text,
    body jsonb NOT NULL,
    updated double precision NOT NULL,
    PRIMARY KEY (shop_id, order_id)
);
CREATE INDEX orders_buyer ON orders (shop_id, buyer_id);
CREATE TABLE logistics (
    shop_id text NOT NULL,
    order_id text NOT NULL,
    ts double precision NOT NULL,
    text text NOT NULL,
    status text,
    PRIMARY KEY (shop_id, order_id, ts, text)
);
CREATE TABLE aftersales (
    shop_id text NOT NULL,
    aftersale_id text NOT NULL,
    order_id text NOT NULL,
    buyer_id text,
    state text NOT NULL,
    open boolean NOT NULL,
    body jsonb NOT NULL,
    updated double precision NOT NULL,
    PRIMARY KEY (shop_id, aftersale_id)
);
-- Every routed input with the decisions it caused, from every instance. ``entry`` names the
-- input (the shard stream entry of a message or request) so that a batch written again by the
-- owner that takes a shard over replaces, never adds.
CREATE TABLE history (
    id bigserial PRIMARY KEY,
    entry text NOT NULL UNIQUE,
    kind text NOT NULL,               -- message | event | tick
    clock double precision NOT NULL,
    shop_id text,
    msg_id text,
    conversation_id text,
    body bytea,
    decisions jsonb NOT NULL DEFAULT '[]',
    instance text NOT NULL
);
CREATE INDEX history_clock ON history (clock);
CREATE INDEX history_conversation ON history (conversation_id, clock);
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    shop_id text NOT NULL,
    conversation_id text NOT NULL,
    buyer_id text NOT NULL,
    agent_id text,
    text text NOT NULL,
    ts double precision NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_at double precision NOT NULL,
    claimed_by text,                  -- the instance delivering it now
    claimed_until double precision,   -- after this another instance may take it over
    acked double precision,
    failed text
);
CREATE INDEX outbox_pending ON outbox (next_at) WHERE acked IS NULL;
CREATE INDEX outbox_conversation ON outbox (conversation_id, ts);
CREATE INDEX outbox_ts ON outbox (ts);
CREATE TABLE violations (
    id bigserial PRIMARY KEY,
    ts double precision NOT NULL,
    shop_id text NOT NULL,
    conversation_id text NOT NULL,
    agent_id text,
    word text NOT NULL,
    tag text NOT NULL DEFAULT '',
    source text NOT NULL DEFAULT ''
);
CREATE INDEX violations_ts ON violations (ts);
"""),
    Migration(2, "history fence, outbox doubt", """
-- The shard's lease epoch a history row was written under: a row is replaced only by a write
-- under the same or a higher epoch, so an owner that lost its shard cannot overwrite the new
-- owner's row.
ALTER TABLE history ADD COLUMN fence bigint NOT NULL DEFAULT 0;
-- A reply whose last attempt may have reached the platform (it timed out after the request was
-- written): the next sender asks the platform before sending it again.
ALTER TABLE outbox ADD COLUMN doubt boolean NOT NULL DEFAULT false;
"""),
)

LATEST = MIGRATIONS[-1].version

_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY, name text NOT NULL, applied timestamptz NOT NULL DEFAULT now())"""


class Status(NamedTuple):
    applied: list[tuple[int, str, str]]   # (version, name, when)
    pending: list[Migration]


def status(conn: psycopg.Connection) -> Status:
    """What is applied and what is not (reads only; no lock)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    applied: list[tuple[int, str, str]] = []
    if exists and exists[0]:
        applied = [(v, n, str(a)) for v, n, a in conn.execute(
            "SELECT version, name, applied FROM schema_migrations ORDER BY version")]
    done = {v for v, _, _ in applied}
    conn.rollback()
    return Status(applied, [m for m in MIGRATIONS if m.version not in done])


def upgrade(conn: psycopg.Connection, *, instance: str = "") -> list[int]:
    """Apply the pending migrations under the advisory lock; returns the versions applied here
    (empty when another process had already applied them)."""
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        conn.execute(_TABLE)
        done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
        newer = [v for v in done if v > LATEST]
        if newer:
            raise RuntimeError(_("the database has schema version {found}, newer than this Fenliu knows ({known}): "
                                 "upgrade Fenliu", found=max(newer), known=LATEST))
        applied = []
        for m in MIGRATIONS:
            if m.version in done:
                continue
            with conn.transaction():
                conn.execute(m.sql)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (m.version, m.name))
            applied.append(m.version)
            log.info("schema_migrated", version=m.version, name=m.name, instance=instance)
        return applied
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
