"""What callers hand the service (HTTP handlers, WebSocket sessions, adapters), on one instance:
each becomes a job of the router loop, and the caller waits until it is committed.

Ingest is bounded by a count of messages waiting (``server.ingest_queue_max``): past it the
HTTP layer answers ``503``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from adapters import OrderContext
from router.core.config import Config
from router.core.models import Decision, Event, Message, OutboundResult
from router.service.errors import Overloaded
from router.service.loop import IngestResult, Job
from router.storage import snapshot, story

if TYPE_CHECKING:
    from router.service.service import Service


class LocalIntake:
    """Jobs for :class:`router.service.loop.RouterLoop`, each answered after its commit."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def _submit(self, kind: str, args: tuple, with_future: bool = True) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.service.engine.enqueue(Job(kind, args, fut) if with_future else Job(kind, (*args, fut)))
        return fut

    async def ingest(self, messages: list[Message]) -> IngestResult:
        """Route and journal messages; returns once they are committed."""
        s = self.service
        limit = s.config.main.server.ingest_queue_max
        if s.failed is not None:
            raise s.refusal()
        if s.pending_ingest + len(messages) > limit or s.stopping:
            raise Overloaded
        s.pending_ingest += len(messages)
        return await self._submit("messages", (messages,))

    async def event(self, event: Event, requester: Any = None, *, via: str = "ws") -> list[Decision]:
        """Apply an event (accept, close, transfer, status); raises InputError if refused. (The
        asker, ``requester`` and ``via``, matters where another instance decides: here the
        caller checked it.)"""
        return await self._submit("event", (event,), with_future=False)

    async def reply(self, agent_id: str, conversation_id: str, text: str) -> OutboundResult:
        """An agent's reply: checked by the outbound filters, journaled, then sent."""
        return await self._submit("reply", (agent_id, conversation_id, text))

    async def order_context(self, items: list[OrderContext]) -> None:
        """Order news from a platform: first the buyer's story is kept (every order, scans,
        after-sale requests, also of orders no buyer's message has named yet), so an agent told
        by the ``context`` frame below reads it; then the buyer's current order and open
        conversation change in the consumer."""
        now = time.time()
        await self.service.store.call(lambda conn: story.record(conn, items, now))
        await self._submit("context", (items,))

    async def reload(self, config: Config) -> list[Decision]:
        fp = await asyncio.to_thread(snapshot.fingerprint, config)
        return await self._submit("reload", (config, fp))
