"""Dispatch strategies: how to choose among the agents who could take a conversation.

A strategy is a sort key over agents; the dispatcher keeps each (shop, skill) pool of available
agents in a heap ordered by it and picks the smallest, so picking costs O(log n). The key may
read only the agent's state (:class:`router.core.models.AgentState`), which changes when the agent is
assigned or released; the dispatcher re-keys the agent in every pool it belongs to then.
Register a new strategy from a plugin with the ``fenliu_strategies`` hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from router.core.models import AgentState


class Strategy:
    """Base class: subclasses set ``name`` and implement :meth:`key` (smallest is picked)."""

    name: ClassVar[str] = ""
    #: Optional: a function of the agent giving an integer (of any sign) that orders agents as
    #: :meth:`key` does, :meth:`key`'s last field left off, which must then be ``agent.id``
    #: (the pools break ties by id themselves). The pools then hold plain integers, which a
    #: heap compares several times faster than tuples. Only used when the class that defines
    #: :meth:`key` defines it too (a subclass with another key does not inherit a wrong one).
    packed_key: ClassVar[Callable[[AgentState], int] | None] = None

    @staticmethod
    def key(agent: AgentState) -> tuple[Any, ...]:
        raise NotImplementedError
