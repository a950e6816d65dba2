"""An example Fenliu plugin, packaged and discovered through the ``fenliu`` entry-point group.

- ``[example]`` policy section: ``rush_words`` and ``rush_priority``;
- ``fenliu_priority``: buyers who say 加急 / 急用 are served sooner, with a flag on the decision;
- ``fenliu_assigned``: counts assignments per agent (what a metrics exporter would do);
- ``fenliu_strategies``: ``fewest_today`` gives the next conversation to the agent who has had
  the fewest so far.
"""

from __future__ import annotations

from collections import Counter

import msgspec

from policies import Strategy
from router.core.hookspecs import hookimpl

assignments: Counter[str] = Counter()


class ExampleSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    rush_words: tuple[str, ...] = ("加急", "急用", "赶时间")
    rush_priority: int = 5


class FewestToday(Strategy):
    name = "fewest_today"

    @staticmethod
    def key(agent):
        return (agent.assigned, agent.id)


@hookimpl
def fenliu_policy_sections():
    return {"example": ExampleSection}


@hookimpl
def fenliu_strategies():
    return {FewestToday.name: FewestToday}


@hookimpl
def fenliu_priority(message, ctx):
    section: ExampleSection = ctx.policy.example
    for word in section.rush_words:
        if word in message.text:
            ctx.flag(f"example:rush:{word}")
            return section.rush_priority
    return None


@hookimpl
def fenliu_assigned(decision):
    assignments[decision.agent_id] += 1
