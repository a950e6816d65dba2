"""Buyer profiles (客户标签, 备注) and notes in the SQLite file, as the service's
:class:`router.service.buyers.SqliteBook` and the conversation view write and read them (the
PostgreSQL side: :class:`router.storage.pg.records.PgRecords`)."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any


def save_profile(conn: sqlite3.Connection, shop_id: str, buyer_id: str, tags: list[str],
                 notes: list[dict[str, Any]]) -> None:
    """Write the buyer's whole profile (the service merged it); ``updated`` is the write's time."""
    conn.execute(
        "INSERT INTO profiles (shop_id, buyer_id, tags, notes, updated) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(shop_id, buyer_id) DO UPDATE SET tags = excluded.tags, notes = excluded.notes, "
        "updated = excluded.updated",
        (shop_id, buyer_id, json.dumps(tags, ensure_ascii=False), json.dumps(notes, ensure_ascii=False), time.time()),
    )


def add_note(conn: sqlite3.Connection, shop_id: str, cid: str, agent_id: str | None, text: str, ts: float) -> None:
    conn.execute("INSERT INTO notes (shop_id, conversation_id, agent_id, text, ts) VALUES (?, ?, ?, ?, ?)",
                 (shop_id, cid, agent_id, text, ts))


def conversation_notes(conn: sqlite3.Connection, cid: str, since: float) -> list[dict[str, Any]]:
    """The notes on ``cid`` since ``since`` (the conversation's opening: not an earlier one's)."""
    return [{"by": a, "text": t, "ts": ts} for a, t, ts in conn.execute(
        "SELECT agent_id, text, ts FROM notes WHERE conversation_id = ? AND ts >= ? ORDER BY id", (cid, since))]
