"""What becomes of an agent's reply in the SQLite file beside the journal writer's outbox row
(:func:`router.storage.writer.write_rows`): each delivery attempt's outcome, and the forbidden
words of a refused one (客服质检, read by :mod:`router.storage.stats`). The PostgreSQL side:
:class:`router.storage.pg.records.PgRecords`."""

from __future__ import annotations

import sqlite3


def mark_acked(conn: sqlite3.Connection, rid: int, now: float) -> None:
    conn.execute("UPDATE outbox SET acked = ?, failed = NULL WHERE id = ?", (now, rid))


def mark_retry(conn: sqlite3.Connection, rid: int, attempts: int, next_at: float, error: str) -> None:
    conn.execute("UPDATE outbox SET attempts = ?, next_at = ?, failed = ? WHERE id = ?", (attempts, next_at, error, rid))


def add_violations(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """``rows``: ``(ts, shop_id, conversation_id, agent_id, word, tag, source)``."""
    conn.executemany(
        "INSERT INTO violations (ts, shop_id, conversation_id, agent_id, word, tag, source) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
