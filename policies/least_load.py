"""``least_load``: the available agent with the fewest open conversations (ties: longest since
last assignment, then agent id). Open conversations are counted across all shops and, with
several instances on one Redis, across all instances (``load + shared_load``)."""

from __future__ import annotations

from policies import Strategy
from router.core.hookspecs import hookimpl
from router.core.models import AgentState


class LeastLoad(Strategy):
    name = "least_load"

    @staticmethod
    def key(agent: AgentState) -> tuple[int, int, str]:
        return (agent.load + agent.shared_load, agent.last_seq, agent.id)

    @staticmethod
    def packed_key(agent: AgentState) -> int:
        """:meth:`key` without the id, as one integer. Added, not or-ed: ``last_seq`` is negative
        under the Redis engine (its claim sequence offset below zero), and stays within ±2**63."""
        return ((agent.load + agent.shared_load) << 64) + agent.last_seq


@hookimpl
def fenliu_strategies():
    return {LeastLoad.name: LeastLoad}
