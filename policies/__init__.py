"""Dispatch strategies: how to choose among the agents who could take a conversation.

A strategy is a sort key over agents; the dispatcher keeps each (shop, skill) pool of available
agents in a heap ordered by it and picks the smallest, so picking costs O(log n). The key may
read only the agent's state (:class:`router.core.models.AgentState`), which changes when the agent is
assigned or released; the dispatcher re-keys the agent in every pool it belongs to then.
Register a new strategy from a plugin with the ``fenliu_strategies`` hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from router.core.models import AgentState


class Strategy:
    """Base class: subclasses set ``name`` and implement :meth:`key` (smallest is picked)."""

    name: ClassVar[str] = ""

    @staticmethod
    def key(agent: AgentState) -> tuple[Any, ...]:
        raise NotImplementedError
