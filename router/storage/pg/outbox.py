"""The outbox of replies in PostgreSQL: every instance's sender claims due rows, so each reply is
sent by one instance at a time and taken over when its sender dies (docs/deploy.md, "Replies are
delivered once")."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from psycopg_pool import AsyncConnectionPool

if TYPE_CHECKING:
    from adapters import OutboundReply

#: Seconds a claimed outbox row stays with its sender before another instance may take it: above
#: the bridge's 10 s callback timeout (adapters/bridge.py), so a live sender is never overtaken.
CLAIM_S = 15.0


class PgOutbox:
    """The ``outbox`` table, as a sender and as the ledger of its attempts
    (:class:`router.service.outbox.Ledger`)."""

    def __init__(self, pool: AsyncConnectionPool, instance: str, round_trip: Callable[[str], None]) -> None:
        self.pool = pool
        self.instance = instance
        self._rt = round_trip

    async def add_reply(self, shop_id: str, conversation_id: str, buyer_id: str, agent_id: str | None, text: str,
                        ts: float) -> int:
        async with self.pool.connection() as conn:
            self._rt("outbox")
            cur = await conn.execute(
                "INSERT INTO outbox (shop_id, conversation_id, buyer_id, agent_id, text, ts, next_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id", (shop_id, conversation_id, buyer_id, agent_id, text, ts, ts))
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def claim_due(self, now: float, limit: int = 100) -> list[tuple[OutboundReply, int, bool]]:
        """Due replies no live sender holds, claimed for this instance for :data:`CLAIM_S`:
        ``FOR UPDATE SKIP LOCKED`` lets instances claiming together each take other rows. Each
        comes with its attempts and whether it is in doubt: its last attempt may have reached the
        platform (it timed out after the request was written, or its claim lapsed: the sender died
        before recording the answer)."""
        from adapters import OutboundReply

        async with self.pool.connection() as conn:
            self._rt("outbox")
            cur = await conn.execute(
                "WITH due AS (SELECT id, claimed_until IS NOT NULL AS lapsed FROM outbox WHERE acked IS NULL"
                " AND next_at <= %s AND (claimed_until IS NULL OR claimed_until < %s) ORDER BY next_at LIMIT %s"
                " FOR UPDATE SKIP LOCKED) "
                "UPDATE outbox o SET claimed_by = %s, claimed_until = %s FROM due WHERE o.id = due.id "
                "RETURNING o.id, o.shop_id, o.conversation_id, o.buyer_id, o.text, o.ts, o.agent_id, o.attempts,"
                " o.doubt OR due.lapsed",
                (now, now, limit, self.instance, now + CLAIM_S))
            rows = await cur.fetchall()
        return [(OutboundReply(rid, shop, cid, buyer, text, ts, agent), attempts, doubt)
                for rid, shop, cid, buyer, text, ts, agent, attempts, doubt in sorted(rows)]

    async def acked(self, rid: int, now: float) -> None:
        async with self.pool.connection() as conn:
            self._rt("outbox")
            await conn.execute("UPDATE outbox SET acked = %s, failed = NULL, claimed_until = NULL, doubt = false "
                               "WHERE id = %s AND claimed_by = %s", (now, rid, self.instance))

    async def retry(self, rid: int, attempts: int, next_at: float, error: str, doubt: bool) -> None:
        async with self.pool.connection() as conn:
            self._rt("outbox")
            await conn.execute("UPDATE outbox SET attempts = %s, next_at = %s, failed = %s, claimed_until = NULL, "
                               "doubt = %s WHERE id = %s AND claimed_by = %s",
                               (attempts, next_at, error, doubt, rid, self.instance))

    async def pending(self) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM outbox WHERE acked IS NULL")
            row = await cur.fetchone()
        return int(row[0]) if row else 0
