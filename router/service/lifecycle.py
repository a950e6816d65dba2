"""Conversations end as the platforms end them: after a silence.

On the platforms' workbenches a conversation the agent answered and the buyer then left alone
ends by itself after a few minutes, and so does one the bot settled; the agent sees it go and its
capacity is free for the next buyer. Without that, every chat a buyer abandons after an answer
holds a slot of the agent's ``max_concurrent`` until someone remembers to close it, and a
day's queue only grows (the ``make run`` demo went from 0 to 192 queued in six minutes).

:class:`IdleCloser` looks at the open conversations every few seconds and closes, through the
service's ordinary :class:`~router.core.models.CloseEvent` (journaled, so a restart replays it):

- an ``assigned`` conversation whose last word is the agent's, after the buyer has been silent
  ``dispatch.idle_close_s`` since that reply;
- a ``bot`` conversation (the bot answered, no human was needed) silent for
  ``dispatch.bot_idle_close_s``.

A conversation waiting for a human (``queued``, ``reserved``, or ``assigned`` with the buyer's
message unanswered) never closes by itself: that buyer is owed an answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from router.core.models import CloseEvent
from router.core.pipeline import InputError

if TYPE_CHECKING:
    from router.service.service import Service

log = structlog.get_logger("fenliu.lifecycle")

#: How often the open conversations are looked at (a close is at most this late).
SWEEP_S = 5.0


class IdleCloser:
    """Finds the conversations a silence has ended, and closes them through the service."""

    def __init__(self, service: Service, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.clock = clock

    def due(self, now: float) -> list[tuple[str, str]]:
        """``(conversation id, reason)`` for each conversation the silence up to ``now`` ended."""
        service = self.service
        config = service.config
        out: list[tuple[str, str]] = []
        for conv in service.router.dispatcher.conversations.values():
            state = conv.state
            if state != "assigned" and state != "bot":
                continue
            dispatch = config.policy_for(conv.shop_id).dispatch
            hist = service.history.get(conv.id)
            last = hist[-1] if hist else None
            if state == "bot":
                limit = dispatch.bot_idle_close_s
                quiet_since = max(conv.last_ts, last.ts if last is not None else 0.0)
                if limit is not None and now - quiet_since >= limit:
                    out.append((conv.id, "bot_idle"))
            elif last is not None and last.who == "agent" and last.ts >= conv.last_ts:
                limit = dispatch.idle_close_s
                if limit is not None and now - last.ts >= limit:
                    out.append((conv.id, "buyer_idle"))
        return out

    async def sweep(self, now: float | None = None) -> list[str]:
        """Close what :meth:`due` names; returns the ids closed (one that moved on meanwhile —
        the buyer wrote, another agent took it — is left alone)."""
        closed = []
        for cid, reason in self.due(self.clock() if now is None else now):
            conv = self.service.router.dispatcher.conversations.get(cid)
            if conv is None:
                continue
            try:
                await self.service.event(CloseEvent(cid))
            except InputError:
                continue
            closed.append(cid)
            log.info("auto_closed", shop_id=conv.shop_id, conversation_id=cid, agent_id=conv.agent_id, reason=reason)
        return closed

    async def run(self) -> None:
        from router.service.errors import Overloaded

        while True:
            await asyncio.sleep(SWEEP_S)
            if not self.service.ready:
                continue
            try:
                await self.sweep()
            except Overloaded as exc:  # the journal failed: the service is failing closed
                log.warning("auto_close_skipped", reason=str(exc))
            except Exception:  # noqa: BLE001 - a fault of ours must not end the sweeps
                log.exception("auto_close_failed")
