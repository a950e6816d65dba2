"""What ``fenliu faq mine`` reads, from either records store: the period's buyer messages with
the bot's verdict on each, and the agents' replies. The miner itself is one (router/tools/faq_cli.py);
only where the rows live differs — the SQLite journal of one instance, or the history every
instance writes to PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any, NamedTuple

import msgspec


class MineRows(NamedTuple):
    """``messages``: ``(seq, clock, body)`` in routing order; ``verdicts``: ``seq → "bot:…"`` flag;
    ``replies``: ``(conversation_id, agent_id, text, ts)`` of agents' replies, oldest first."""

    messages: Iterable[tuple[int, float, bytes | None]]
    verdicts: dict[int, str]
    replies: Iterable[tuple[str, str | None, str, float]]


def bot_flag(flags: Iterable[str] | None) -> str | None:
    """The bot's verdict among a decision's flags (the last one, as the journal kept it)."""
    found = None
    for f in flags or ():
        if f.startswith("bot:"):
            found = f
    return found


def sqlite_rows(conn: sqlite3.Connection) -> MineRows:
    """The rows from one instance's journal, decisions and outbox."""
    verdicts: dict[int, str] = {}
    for seq, body in conn.execute("SELECT seq, body FROM decisions WHERE cause = 'message'"):
        if (flag := bot_flag(msgspec.json.decode(body).get("flags"))) is not None:
            verdicts[seq] = flag
    return MineRows(
        conn.execute("SELECT seq, clock, body FROM journal WHERE kind = 'message' ORDER BY seq"),
        verdicts,
        conn.execute("SELECT conversation_id, agent_id, text, ts FROM outbox WHERE agent_id IS NOT NULL ORDER BY ts, id"),
    )


def postgres_rows(conn: Any, since: float | None, until: float | None) -> MineRows:
    """The rows from the shared history and outbox (a psycopg connection): every instance's
    messages, each with the decisions it caused, so the verdict needs no second table."""
    lo = since if since is not None else float("-inf")
    hi = until if until is not None else float("inf")
    messages: list[tuple[int, float, bytes | None]] = []
    verdicts: dict[int, str] = {}
    for seq, clock, body, decisions in conn.execute(
            "SELECT id, clock, body, decisions FROM history WHERE kind = 'message' AND clock >= %s AND clock < %s "
            "ORDER BY clock, id", (lo, hi)):
        messages.append((seq, clock, bytes(body) if body is not None else None))
        for d in decisions or ():
            if d.get("cause") == "message" and (flag := bot_flag(d.get("flags"))) is not None:
                verdicts[seq] = flag
    replies = conn.execute("SELECT conversation_id, agent_id, text, ts FROM outbox WHERE agent_id IS NOT NULL "
                           "ORDER BY ts, id").fetchall()
    return MineRows(messages, verdicts, replies)
