"""``round_robin``: the available agent who has waited longest since their last assignment."""

from __future__ import annotations

from policies import Strategy
from router.core.hookspecs import hookimpl
from router.core.models import AgentState


class RoundRobin(Strategy):
    name = "round_robin"

    @staticmethod
    def key(agent: AgentState) -> tuple[int, str]:
        return (agent.last_seq, agent.id)

    @staticmethod
    def packed_key(agent: AgentState) -> int:
        """:meth:`key` without the id, as one integer."""
        return agent.last_seq


@hookimpl
def fenliu_strategies():
    return {RoundRobin.name: RoundRobin}
