"""The dispatcher's pick is the strategy's best eligible agent, whatever happened before.

The pools re-key lazily (a key that only grew is not pushed, its entry is re-keyed when it
reaches the top), so the property checked here is the one that laziness could break: every new
conversation goes to the agent with the smallest strategy key among those who could take it,
computed by brute force over all agents.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core.config import load_config
from router.core.dispatch import Dispatcher
from tests.conftest import T0
from tests.policies.conftest import agents_toml, write_config

SKILLS = ["presale", "aftersale"]
SHOPS = '[[shops]]\nid = "s1"\npolicy = "p"\n[[shops]]\nid = "s2"\npolicy = "p"\n'

agent_st = st.fixed_dictionaries({
    "skills": st.lists(st.sampled_from(SKILLS), min_size=1, max_size=2, unique=True),
    "shops": st.sampled_from([["*"], ["s1"], ["s2"]]),
    "max_concurrent": st.integers(1, 3),
    "weight": st.integers(1, 5),
})
op_st = st.one_of(
    st.tuples(st.just("open"), st.sampled_from(["s1", "s2"]), st.sampled_from(SKILLS)),
    st.tuples(st.just("close"), st.integers(0, 40)),
    st.tuples(st.just("status"), st.integers(0, 5), st.sampled_from(["online", "offline"])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(agents=st.lists(agent_st, min_size=1, max_size=6),
       strategy=st.sampled_from(["least_load", "round_robin", "weighted"]),
       ops=st.lists(op_st, max_size=60))
def test_every_pick_is_the_strategys_best_eligible_agent(agents, strategy, ops):
    with tempfile.TemporaryDirectory() as tmp:
        policy = f'[dispatch]\nstrategy = "{strategy}"\ndefault_skill = "presale"\ntargets = [{{ skills = ["@skill"] }}]\n'
        cfg = load_config(write_config(Path(tmp), SHOPS, agents_toml(*(
            {"id": f"a{i}", **a} for i, a in enumerate(agents))), {"p": policy}))
    d = Dispatcher(cfg)
    d.advance(T0)
    key = cfg.strategies[strategy].key
    opened: list[str] = []
    for n, op in enumerate(ops):
        if op[0] == "open":
            _, shop, skill = op
            eligible = [st_ for aid, st_ in d.agents.items() if st_.available and shop in d._pools.shops[aid]
                        and skill in cfg.agents[aid].skills]
            best = min(eligible, key=key) if eligible else None
            expected = best.id if best is not None else None
            conv = d.open(shop, f"b{n}", T0 + n)
            conv.skill = skill
            _, agent, _ = d.route_new(conv)
            assert agent == expected
            opened.append(conv.id)
        elif op[0] == "close" and opened:
            cid = opened.pop(op[1] % len(opened))
            d.close(cid)
        elif op[0] == "status":
            aid = f"a{op[1] % len(agents)}"
            d.set_status(aid, op[2])
        d.check_invariants()
