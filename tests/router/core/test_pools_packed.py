"""Packed pool entries (one integer per entry, ``Strategy.packed_key``) pick exactly what the
tuple entries pick.

Two :class:`AgentPools` over twin agents, one under the built-in strategy (packed entries) and
one under a subclass that redefines ``key`` only (so it keeps tuples), go through the same
random assignments, releases, status changes, shared loads, refusals and snapshots; every pick
(with and without an excluded agent, over one skill or several) and every count of available
agents must agree, and each pick must be the strategy's best eligible agent by brute force.
Also with the shops under three strategies (``mixed``: an agent of several shops is under
several, some packed and some not) and with pools compacted whenever a heap outgrows its
members (``tight``): the capacity plan test once caught a layout whose compaction, run by the
push of an agent under several strategies, dropped that agent's new entries.
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.least_load import LeastLoad
from policies.round_robin import RoundRobin
from router.core.config import load_config
from router.core.models import AgentState
from router.core.pools import AgentPools, Pool, packed_of
from tests.policies.conftest import agents_toml, write_config

SHOPS = ("s1", "s2", "s3")
SKILLS = ("presale", "aftersale", "vip")
#: ids whose string order is not their numeric order (the tie-break is by id)
AGENTS = [
    {"id": aid, "skills": list(skills), "shops": shops, "max_concurrent": cap}
    for aid, skills, shops, cap in (
        ("a1", SKILLS, ["*"], 2), ("a10", ("presale",), ["s1"], 3), ("a2", ("presale", "aftersale"), ["s1", "s2"], 1),
        ("a20", ("aftersale",), ["s2", "s3"], 2), ("a3", ("presale", "vip"), ["s3"], 2), ("b", ("presale",), ["*"], 4),
        ("a11", ("aftersale", "vip"), ["s1", "s3"], 2), ("z", SKILLS, ["s2"], 1), ("a4", ("presale",), ["s1", "s2", "s3"], 2),
    )
]


def _config(strategy: str):
    """All shops under ``strategy``; ``mixed``: s1 least-load, s2 round-robin, s3 weighted."""
    per_shop = dict(zip(SHOPS, ("least_load", "round_robin", "weighted"))) if strategy == "mixed" else {}
    with tempfile.TemporaryDirectory() as tmp:
        shops = "".join(f'[[shops]]\nid = "{s}"\npolicy = "{per_shop.get(s, strategy)}"\n' for s in SHOPS)
        policies = {name: f'[dispatch]\nstrategy = "{name}"\ndefault_skill = "presale"\ntargets = [{{ skills = ["@skill"] }}]\n'
                    for name in {per_shop.get(s, strategy) for s in SHOPS}}
        return load_config(write_config(Path(tmp), shops, agents_toml(*AGENTS), policies))


NAMES = ("least_load", "round_robin", "mixed")
CONFIGS = {name: _config(name) for name in NAMES}


class TupleLeastLoad(LeastLoad):
    key = staticmethod(LeastLoad.key)  # its own key: the inherited packed_key is not used


class TupleRoundRobin(RoundRobin):
    key = staticmethod(RoundRobin.key)


TWINS = {"least_load": TupleLeastLoad, "round_robin": TupleRoundRobin}


def _pools(name: str, packed: bool, tight: bool = False) -> tuple[AgentPools, dict[str, AgentState]]:
    """``tight``: a pool is compacted as soon as its heap holds more entries than members."""
    cfg = CONFIGS[name]
    policy = {sid: cfg.policy_for(sid).dispatch for sid in cfg.shops}
    strategies = dict(cfg.strategies) if packed else {k: TWINS.get(k, v) for k, v in cfg.strategies.items()}
    view = SimpleNamespace(agents=cfg.agents, shops=cfg.shops, strategies=strategies)
    agents: dict[str, AgentState] = {}
    pools = AgentPools.for_config(agents, view, policy, set())  # type: ignore[arg-type]
    if tight:
        for pool in pools.pools.values():
            pool.limit = pool.members
    pools.recount(cfg.shops)
    for state in agents.values():
        pools.touch(state, force=True)
    return pools, agents


def test_only_the_class_that_defines_key_offers_its_packed_key():
    assert packed_of(LeastLoad) is LeastLoad.packed_key
    assert packed_of(TupleLeastLoad) is None
    pools, _ = _pools("least_load", packed=True)
    assert all(p.packed is not None for p in pools.pools.values())
    pools, _ = _pools("least_load", packed=False)
    assert all(p.packed is None for p in pools.pools.values())
    pools, _ = _pools("mixed", packed=True)
    assert {p.packed is not None for p in pools.pools.values()} == {True, False}
    assert any(len(groups) > 1 for groups in pools.groups.values())  # agents under several strategies


agent_i = st.integers(0, len(AGENTS) - 1)
op_st = st.one_of(
    st.tuples(st.just("pick"), st.sampled_from(SHOPS), st.lists(st.sampled_from(SKILLS), min_size=1, max_size=3,
                                                              unique=True), st.one_of(st.none(), agent_i)),
    st.tuples(st.just("release"), agent_i),
    st.tuples(st.just("status"), agent_i, st.sampled_from(["online", "offline", "break"])),
    st.tuples(st.just("shift"), agent_i, st.booleans()),
    st.tuples(st.just("shared"), agent_i, st.integers(0, 3)),
    # the Redis engine's shared counters: a claim sequence offset below zero (claims.SEQ_OFFSET)
    st.tuples(st.just("counters"), agent_i, st.integers(0, 50)),
    st.tuples(st.just("refuse"), agent_i),
    st.tuples(st.just("readmit"), agent_i),
    st.tuples(st.just("snapshot")),
)


def _best(name: str, agents: dict[str, AgentState], pools: AgentPools, shop: str, skills: list[str],
          exclude: str | None) -> str | None:
    cfg = CONFIGS[name]
    key = cfg.strategies[cfg.policy_for(shop).dispatch.strategy].key
    ok = [a for aid, a in agents.items() if aid != exclude and pools.eligible(a, shop)
          and any(s in cfg.agents[aid].skills for s in skills)]
    return min(ok, key=key).id if ok else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), tight=st.booleans(), ops=st.lists(op_st, max_size=80))
def test_packed_pools_pick_what_tuple_pools_pick(name, tight, ops):
    twins = [_pools(name, packed=True, tight=tight), _pools(name, packed=False, tight=tight)]
    seq = 0
    ids = [a["id"] for a in AGENTS]
    for op in ops:
        if op[0] == "snapshot":
            twins = [pickle.loads(pickle.dumps(twin)) for twin in twins]  # pools and agents in one pickle
            continue
        picked = []
        seq += op[0] == "pick"
        for pools, agents in twins:
            if op[0] == "pick":
                _, shop, skills, ex = op
                exclude = ids[ex] if ex is not None else None
                best = pools.pick(shop, tuple(skills), exclude)
                assert (best.id if best else None) == _best(name, agents, pools, shop, skills, exclude)
                picked.append(best.id if best else None)
                if best is not None:
                    best.load += 1
                    best.assigned += 1
                    best.last_seq = seq
                    best.conversations[f"c{seq}"] = None
                    pools.touch(best)
                picked.append(tuple(pools.available(s, k, True) for s in SHOPS for k in SKILLS))
                continue
            a = agents[ids[op[1]]]
            if op[0] == "release":
                if a.conversations:
                    del a.conversations[next(iter(a.conversations))]
                    a.load -= 1
                    pools.touch(a)
            elif op[0] == "status":
                pools.set_online(a, lambda a=a, v=op[2]: setattr(a, "status", v))
                pools.readmit(a)
            elif op[0] == "shift":
                pools.set_online(a, lambda a=a, v=op[2]: setattr(a, "in_shift", v))
                pools.readmit(a)
            elif op[0] == "shared":
                a.shared_load = op[2]
                pools.touch(a)
            elif op[0] == "counters":
                a.last_seq = op[2] - (1 << 62)
                pools.readmit(a)
            elif op[0] == "refuse":
                if a.available:
                    pools.refuse(a)
            elif op[0] == "readmit":
                pools.readmit(a)
        if picked:
            assert picked[:2] == picked[2:]
        assert twins[0][0].online == twins[1][0].online


def test_a_pool_pickled_before_packed_entries_keeps_its_tuples():
    pool = Pool(LeastLoad.key)
    pool.heap.append((0, 0, "a1", 1, "a1"))
    state = (None, {"heap": pool.heap, "key": LeastLoad.key, "members": 1, "limit": 68})
    old = Pool.__new__(Pool)
    old.__setstate__(state)
    assert old.packed is None and old.heap == [(0, 0, "a1", 1, "a1")]
    pools = AgentPools.__new__(AgentPools)
    pools.__setstate__({"agents": {}, "refused": set(), "pools": {}, "groups": {}, "queue_keys": {}, "shops": {},
                        "online": {}, "listed": {}, "current": {}})
    assert pools.ids == [] and pools.ranks == {}


@given(name=st.sampled_from(["least_load", "round_robin"]),
       states=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(-(1 << 62), 1 << 62)),
                       min_size=2, max_size=2))
def test_a_packed_key_orders_agents_as_the_key_does(name, states):
    """For any load, shared load and sequence, the Redis engine's negative claim sequences
    (``claims.SEQ_OFFSET`` below zero) included."""
    strategy = CONFIGS[name].strategies[name]
    a, b = AgentState("a", 5, 1), AgentState("b", 5, 1)
    for agent, (load, shared, seq) in zip((a, b), states):
        agent.load, agent.shared_load, agent.last_seq = load, shared, seq
    keys = strategy.key(a)[:-1], strategy.key(b)[:-1]
    packed = strategy.packed_key(a), strategy.packed_key(b)
    assert (keys[0] < keys[1]) == (packed[0] < packed[1]) and (keys[0] == keys[1]) == (packed[0] == packed[1])


def test_an_agent_under_several_strategies_stays_in_its_packed_pools_after_a_snapshot():
    """Pickle memoises tuples but not integers, so after a snapshot an agent's current packed
    entry is equal to its heap entry, not the same object: the pick once popped such an agent
    (under several strategies, where there is no re-key to restore the identity) as stale."""
    pools, agents = pickle.loads(pickle.dumps(_pools("mixed", packed=True)))
    best = pools.pick("s1", ("vip", "presale", "aftersale"))
    assert best is not None and best.id == _best("mixed", agents, pools, "s1", ["vip", "presale", "aftersale"], None)
    assert best.id == "a1"
    assert pools.available("s1", "presale", True) == 5  # a1, a10, a2, b, a4
