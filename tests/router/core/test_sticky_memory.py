"""Who served a closed conversation is remembered for its sticky window (``sticky_hours``) and
no longer: a service that runs for weeks closes millions of conversations."""

from __future__ import annotations

from router.core.config import load_config
from router.core.dispatch import Dispatcher
from tests.conftest import T0
from tests.policies.conftest import ONE_SHOP, agents_toml, policy, write_config

STEP_S = 10.0  # a conversation closes every 10 s: 360 of them in a window of one hour
CONVERSATIONS = 5_000


def test_the_sticky_memory_keeps_its_window_and_forgets_the_rest(tmp_path):
    cfg = load_config(write_config(tmp_path, ONE_SHOP, agents_toml(
        {"id": "a1", "skills": ["presale"], "shops": ["*"], "max_concurrent": 5},
        {"id": "a2", "skills": ["presale"], "shops": ["*"], "max_concurrent": 5}),
        {"p": policy(extra="sticky_hours = 1")}))
    d = Dispatcher(cfg)
    served: dict[str, str] = {}
    closed_at: dict[str, float] = {}
    largest = 0
    for n in range(CONVERSATIONS):
        now = T0 + n * STEP_S
        d.advance(now)
        conv = d.open("s1", f"b{n}", now)
        conv.skill = "presale"
        _, agent, _ = d.route_new(conv)
        served[conv.id], closed_at[conv.id] = agent, now
        d.close(conv.id)
        largest = max(largest, len(d.last_agent))

    assert largest <= 2 * 1024 + 1, f"the memory grew to {largest} entries for a window of 360"
    in_window = {cid for cid, t in closed_at.items() if now - t <= 3600}
    assert in_window <= d.last_agent.keys(), "a conversation closed within the window was forgotten"
    assert all(d.last_agent[cid][0] == served[cid] for cid in in_window)

    # and it still sticks: a buyer back within the hour gets the agent who served them
    back = f"b{CONVERSATIONS - 100}"
    d.advance(now + 1)
    conv = d.open("s1", back, now + 1)
    conv.skill = "presale"
    _, agent, flags = d.route_new(conv)
    assert agent == served[conv.id] and "sticky" in flags


def test_a_snapshot_keeps_the_memory_and_an_older_one_is_bounded_from_then_on(tmp_path):
    from router.core.sticky import StickyMemory
    from router.storage import snapshot

    cfg = load_config(write_config(tmp_path, ONE_SHOP, agents_toml(
        {"id": "a1", "skills": ["presale"], "shops": ["*"], "max_concurrent": 5}), {"p": policy(extra="sticky_hours = 1")}))
    d = Dispatcher(cfg)
    for n in range(3):
        d.advance(T0 + n)
        conv = d.open("s1", f"b{n}", T0 + n)
        conv.skill = "presale"
        d.route_new(conv)
        d.close(conv.id)
    state = snapshot.load(snapshot.dump(d, b""))["dispatcher"]
    again = Dispatcher(cfg)
    snapshot.restore(again, state)
    assert type(again.last_agent) is StickyMemory and list(again.last_agent) == list(d.last_agent)

    state["last_agent"] = dict(state["last_agent"])  # as a snapshot from before kept it
    older = Dispatcher(cfg)
    snapshot.restore(older, state)
    assert type(older.last_agent) is StickyMemory and older.last_agent == d.last_agent
    older.last_agent.remember("s1:b9", "a1", T0 + 9, older._policy)
    assert list(older.last_agent)[-1] == "s1:b9"
