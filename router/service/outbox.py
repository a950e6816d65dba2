"""The outbox: agents' replies, stored when committed and sent to the platform until it acknowledges.

A reply is a row before it is a request, so a crash or a platform that is down loses nothing:
the pending rows are queued again at start, and a failed send is retried with a growing delay.
A reply whose last attempt may have reached the platform (queued again at start, or a request
that timed out after it was written) is *in doubt*: the next attempt asks the platform first
(:meth:`adapters.Adapter.delivered`), so it is not delivered twice.
One attempt (:func:`attempt`) is the same for every store; what differs is the *ledger* that
records its outcome (the SQLite file here, PostgreSQL's claimed rows in router/service/redis/pg.py).
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import structlog

from adapters import Adapter, OutboundReply, deliver_once
from router.storage.replies import mark_acked, mark_retry

if TYPE_CHECKING:
    from router.service.metrics import Metrics
    from router.storage.store import Store

log = structlog.get_logger("fenliu.service")

POLL_S = 0.25


class Ledger(Protocol):
    """Where the outcome of an attempt is recorded."""

    async def acked(self, rid: int, now: float) -> None: ...

    async def retry(self, rid: int, attempts: int, next_at: float, error: str, doubt: bool) -> None: ...


class SqliteLedger:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def acked(self, rid: int, now: float) -> None:
        await self.store.call(lambda c: mark_acked(c, rid, now))

    async def retry(self, rid: int, attempts: int, next_at: float, error: str, doubt: bool) -> None:
        """``doubt`` stays in memory: after a restart every pending reply is in doubt anyway."""
        await self.store.call(lambda c: mark_retry(c, rid, attempts, next_at, error))


async def attempt(adapter: Adapter | None, item: OutboundReply, attempts: int, metrics: Metrics, ledger: Ledger,
                  stopping: Callable[[], bool] = lambda: False, logger: structlog.typing.FilteringBoundLogger = log,
                  *, in_doubt: bool = False) -> tuple[int, float, bool] | None:
    """Send ``item`` once (asking the platform first when ``in_doubt``) and record the outcome;
    returns the attempts so far, when to try again and whether it is now in doubt if it failed
    (nothing is recorded once ``stopping``: the store is closing)."""
    outcome = await deliver_once(adapter, item, in_doubt=in_doubt)
    if stopping():
        return None
    if outcome.error is None:
        metrics.outbound.labels("confirmed" if outcome.confirmed else "acked").inc()
        if outcome.confirmed:
            logger.info("delivery_confirmed", shop_id=item.shop_id, conversation_id=item.conversation_id,
                        reply_id=item.id)
        await ledger.acked(item.id, time.time())
        return None
    attempts += 1
    delay = min(60.0, 0.5 * 2 ** (attempts - 1))
    next_at = time.time() + delay
    metrics.outbound.labels("failed").inc()
    logger.warning("delivery_failed", shop_id=item.shop_id, conversation_id=item.conversation_id,
                   reply_id=item.id, attempts=attempts, retry_in_s=delay, error=outcome.error, in_doubt=outcome.doubt)
    await ledger.retry(item.id, attempts, next_at, outcome.error, outcome.doubt)
    return attempts, next_at, outcome.doubt


class Outbox:
    """The replies this instance sends: a heap of when each is due."""

    def __init__(self, adapters: Callable[[], dict[str, Adapter]], metrics: Metrics, ledger: Ledger,
                 stopping: Callable[[], bool]) -> None:
        self.adapters = adapters
        self.metrics = metrics
        self.ledger = ledger
        self.stopping = stopping
        self._due: list[tuple[float, int]] = []
        self._items: dict[int, OutboundReply] = {}
        self._attempts: dict[int, int] = {}
        self._doubt: set[int] = set()
        self._sending: set[int] = set()

    def queue(self, item: OutboundReply, when: float, attempts: int, *, in_doubt: bool = False) -> None:
        """``in_doubt``: an earlier attempt may have reached the platform (a row found pending at start)."""
        self._items[item.id] = item
        self._attempts[item.id] = attempts
        if in_doubt:
            self._doubt.add(item.id)
        heapq.heappush(self._due, (when, item.id))
        if when <= time.time():
            self._deliver_soon(item.id)

    def _deliver_soon(self, rid: int) -> None:
        if rid in self._sending or rid not in self._items:
            return
        self._sending.add(rid)
        asyncio.get_running_loop().create_task(self._deliver(rid))

    async def _deliver(self, rid: int) -> None:
        item = self._items.get(rid)
        try:
            if item is None:
                return
            failed = await attempt(self.adapters().get(item.shop_id), item, self._attempts.get(rid, 0), self.metrics,
                                   self.ledger, self.stopping, in_doubt=rid in self._doubt)
            if self.stopping():
                return
            if failed is None:
                self._items.pop(rid, None)
                self._attempts.pop(rid, None)
                self._doubt.discard(rid)
                return
            self._attempts[rid], next_at, doubt = failed
            if doubt:
                self._doubt.add(rid)
            else:
                self._doubt.discard(rid)
            heapq.heappush(self._due, (next_at, rid))
        finally:
            self._sending.discard(rid)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            now = time.time()
            while self._due and self._due[0][0] <= now:
                _, rid = heapq.heappop(self._due)
                self._deliver_soon(rid)

    def pending(self) -> int:
        return len(self._items)
