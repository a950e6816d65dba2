"""``weighted``: shares of new conversations proportional to each agent's ``weight`` (千牛's
权重: an agent of weight 300 gets three times the conversations of one of weight 100).

Stride scheduling: each agent's next "virtual finish" is ``(assigned + 1) / weight``; the
smallest goes next, so over any run the shares track the weights within one assignment.
"""

from __future__ import annotations

from policies import Strategy
from router.core.hookspecs import hookimpl
from router.core.models import AgentState


class Weighted(Strategy):
    name = "weighted"

    @staticmethod
    def key(agent: AgentState) -> tuple[float, int, str]:
        return ((agent.assigned + 1) / agent.weight, agent.last_seq, agent.id)


@hookimpl
def fenliu_strategies():
    return {Weighted.name: Weighted}
