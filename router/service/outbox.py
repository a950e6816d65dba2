"""The outbox: agents' replies, stored when committed and sent to the platform until it acknowledges.

A reply is a row before it is a request, so a crash or a platform that is down loses nothing:
the pending rows are queued again at start, and a failed send is retried with a growing delay.
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

    async def retry(self, rid: int, attempts: int, next_at: float, error: str) -> None: ...


class SqliteLedger:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def acked(self, rid: int, now: float) -> None:
        await self.store.call(lambda c: mark_acked(c, rid, now))

    async def retry(self, rid: int, attempts: int, next_at: float, error: str) -> None:
        await self.store.call(lambda c: mark_retry(c, rid, attempts, next_at, error))


async def attempt(adapter: Adapter | None, item: OutboundReply, attempts: int, metrics: Metrics, ledger: Ledger,
                  stopping: Callable[[], bool] = lambda: False, logger: structlog.typing.FilteringBoundLogger = log,
                  ) -> tuple[int, float] | None:
    """Send ``item`` once and record the outcome; returns the attempts so far and when to try
    again if it failed (nothing is recorded once ``stopping``: the store is closing)."""
    error = await deliver_once(adapter, item)
    if stopping():
        return None
    if error is None:
        metrics.outbound.labels("acked").inc()
        await ledger.acked(item.id, time.time())
        return None
    attempts += 1
    delay = min(60.0, 0.5 * 2 ** (attempts - 1))
    next_at = time.time() + delay
    metrics.outbound.labels("failed").inc()
    logger.warning("delivery_failed", shop_id=item.shop_id, conversation_id=item.conversation_id,
                   reply_id=item.id, attempts=attempts, retry_in_s=delay, error=error)
    await ledger.retry(item.id, attempts, next_at, error)
    return attempts, next_at


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
        self._sending: set[int] = set()

    def queue(self, item: OutboundReply, when: float, attempts: int) -> None:
        self._items[item.id] = item
        self._attempts[item.id] = attempts
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
                                   self.ledger, self.stopping)
            if self.stopping():
                return
            if failed is None:
                self._items.pop(rid, None)
                self._attempts.pop(rid, None)
                return
            self._attempts[rid], next_at = failed
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
