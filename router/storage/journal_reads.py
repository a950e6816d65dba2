"""What the service reads back from the journal and its side tables (router/service/journal.py):
at start the newest snapshot, the dedupe ids up to it and the side tables; while running, the exact
answer for a message id older than the dedupe window.

Here so the service reaches SQLite only through the stores (the import contract in pyproject.toml).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from router.storage.store import read_only

if TYPE_CHECKING:
    from router.core.dedupe import SeenIds


class JournalLookup:
    """A read-only connection kept for :meth:`journaled`, opened on first use: it takes no write
    lock, and it is used from worker threads (``check_same_thread=False``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def journaled(self, shop_id: str, msg_id: str) -> bool:
        """Whether the journal holds the message (its unique index answers)."""
        if self._conn is None:
            self._conn = read_only(self.path, check_same_thread=False)
        return self._conn.execute(
            "SELECT 1 FROM journal WHERE kind = 'message' AND shop_id = ? AND msg_id = ?",
            (shop_id, msg_id)).fetchone() is not None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def newest_snapshot(conn: sqlite3.Connection) -> tuple[int, str, int, bytes] | None:
    """``(seq, fingerprint, format, body)`` of the newest snapshot, if any."""
    return conn.execute("SELECT seq, fingerprint, format, body FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()


def read_seen_ids(conn: sqlite3.Connection, seq: int, ids: SeenIds) -> None:
    """Feed ``ids`` the message ids journaled up to ``seq``, streamed (there may be millions).
    Ids older than the window go to the filters in the order of the (covering) unique index,
    which reads a tenth of the table; the window's own ids in journal order."""
    row = conn.execute("SELECT seq FROM journal WHERE kind = 'message' AND seq <= ? ORDER BY seq DESC "
                       "LIMIT 1 OFFSET ?", (seq, ids.window - 1)).fetchone()
    start = row[0] if row is not None else 0
    ids.remember_old(conn.execute("SELECT shop_id, msg_id FROM journal INDEXED BY journal_msg "
                                  "WHERE kind = 'message' AND seq < ?", (start,)))
    for shop_id, msg_id in conn.execute("SELECT shop_id, msg_id FROM journal WHERE kind = 'message' "
                                        "AND seq >= ? AND seq <= ? ORDER BY seq", (start, seq)):
        ids.seen_before(shop_id, msg_id)


def side_tables(conn: sqlite3.Connection, open_ids: list[str]) -> tuple[list, list, list, list]:
    """The profiles, the orders by update time, the replies of the open conversations ``open_ids``
    ``(conversation_id, agent_id, text, ts)`` and the replies not yet acknowledged (outbox rows)."""
    profiles = conn.execute("SELECT shop_id, buyer_id, tags, notes FROM profiles").fetchall()
    orders = conn.execute("SELECT shop_id, order_id, buyer_id, body, updated FROM orders ORDER BY updated").fetchall()
    replies = []
    for i in range(0, len(open_ids), 500):  # SQLite's limit on bound parameters
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
