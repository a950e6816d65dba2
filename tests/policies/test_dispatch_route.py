"""Dispatch semantics through `fenliu route`, with exact expected decisions (DESIGN.md
"Dispatch semantics"; issue 5)."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.policies.conftest import ONE_SHOP, Raw, agents_toml, ev, msg, policy, write_config


def agent(aid: str, skills=("presale",), cap: int = 5, **kw):
    return {"id": aid, "skills": list(skills), "shops": ["*"], "max_concurrent": cap, **kw}


def test_round_robin_takes_turns_longest_idle_first(tmp_path, route):
    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("a1"), agent("a2"), agent("a3")), {"p": policy()})
    r = route(cfg, [msg(i, f"b{i}", i) for i in range(1, 8)])
    assert r.agents() == ["a1", "a2", "a3", "a1", "a2", "a3", "a1"]


def test_round_robin_skips_full_agents(tmp_path, route):
    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("a1", cap=1), agent("a2", cap=3)), {"p": policy()})
    r = route(cfg, [msg(i, f"b{i}", i) for i in range(1, 6)])
    assert r.brief() == [
        ("m1", "assigned", "a1", "message"), ("m2", "assigned", "a2", "message"),
        ("m3", "assigned", "a2", "message"), ("m4", "assigned", "a2", "message"),
        ("m5", "queued", None, "message"),
    ]


def test_least_load_with_caps_queues_and_drains_on_close(tmp_path, route):
    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("a1", cap=2), agent("a2", cap=2)),
                       {"p": policy("least_load")})
    lines = [msg(i, f"b{i}", i) for i in range(1, 6)]
    lines += [msg(6, "b1", 6, "还在吗")]
    lines += [ev("close", 10, conversation_id="s1:b2")]
    r = route(cfg, lines)
    assert r.brief() == [
        ("m1", "assigned", "a1", "message"),
        ("m2", "assigned", "a2", "message"),
        ("m3", "assigned", "a1", "message"),
        ("m4", "assigned", "a2", "message"),
        ("m5", "queued", None, "message"),
        ("m6", "assigned", "a1", "message"),
        ("s1:b5", "assigned", "a2", "queue_drain"),
    ]


def test_least_load_prefers_fewest_open_then_longest_idle(tmp_path, route):
    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("a1"), agent("a2"), agent("a3")), {"p": policy("least_load")})
    lines = [msg(1, "b1", 1), msg(2, "b2", 2), msg(3, "b3", 3), ev("close", 4, conversation_id="s1:b2"),
             msg(4, "b4", 5), msg(5, "b5", 6)]
    r = route(cfg, lines)
    assert r.agents() == ["a1", "a2", "a3", "a2", "a1"]


def test_weighted_shares_within_five_percent(tmp_path, route):
    cfg = write_config(
        tmp_path, ONE_SHOP,
        agents_toml(agent("a1", weight=300, cap=1000), agent("a2", weight=100, cap=1000), agent("a3", weight=200, cap=1000)),
        {"p": policy("weighted")},
    )
    lines = []
    for i in range(10_000):
        lines.append(msg(i, f"b{i}", i))
        lines.append(ev("close", i + 0.5, conversation_id=f"s1:b{i}"))
    r = route(cfg, lines)
    shares = Counter(d["agent_id"] for d in r.decisions)
    assert sum(shares.values()) == 10_000
    for aid, weight in (("a1", 3), ("a2", 1), ("a3", 2)):
        assert abs(shares[aid] / 10_000 - weight / 6) <= 0.05 * weight / 6, shares


def test_sticky_returns_to_last_agent_within_window_and_falls_back(tmp_path, route):
    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("a1"), agent("a2")),
                       {"p": policy(extra="sticky_hours = 1")})
    lines = [
        msg(1, "b1", 0), ev("close", 10, conversation_id="s1:b1"),
        msg(2, "b2", 20),
        msg(3, "b1", 30),  # round robin would give a2... but b1 sticks to a1
        ev("close", 40, conversation_id="s1:b1"),
        ev("agent_status", 50, agent_id="a1", status="offline"),
        msg(4, "b1", 60),  # a1 offline: fallback to normal pick
        ev("close", 70, conversation_id="s1:b1"),
        ev("agent_status", 80, agent_id="a1", status="online"),
        msg(5, "b1", 80 + 3601 * 1),  # a2 was last, but the window has passed: round robin → a1
    ]
    r = route(cfg, lines)
    assert r.brief() == [
        ("m1", "assigned", "a1", "message"), ("m2", "assigned", "a2", "message"),
        ("m3", "assigned", "a1", "message"), ("m4", "assigned", "a2", "message"),
        ("m5", "assigned", "a1", "message"),
    ]
    assert "sticky" in r.of("m3")["flags"] and "sticky" not in r.of("m5")["flags"]


def test_sticky_never_waits_for_a_busy_agent(tmp_path, route):
    """The last agent is taken only while they have room: at their cap, the returning buyer goes
    to whoever the strategy picks at once, and with nobody free waits in the queue for *any*
    agent, never for that one (docs/dispatch.md)."""
    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("a1", cap=1), agent("a2", cap=1)),
                       {"p": policy(extra="sticky_hours = 1")})
    lines = [
        msg(1, "b1", 0), ev("close", 10, conversation_id="s1:b1"),  # b1's last agent: a1
        msg(2, "b2", 20),  # a2 (round robin)
        ev("close", 25, conversation_id="s1:b2"),
        msg(3, "b3", 30),  # a1, now full
        msg(4, "b1", 40),  # a1 is busy: a2 at once, no sticky wait
        ev("close", 50, conversation_id="s1:b3"),
        ev("close", 55, conversation_id="s1:b1"),  # b1's last agent: a2
        msg(5, "b4", 60), msg(6, "b5", 61),  # both full
        msg(7, "b1", 70),  # queued: nobody has room
        ev("close", 80, conversation_id="s1:b4"),  # a1 frees up first and takes b1
    ]
    r = route(cfg, lines)
    assert r.of("m4")["agent_id"] == "a2" and "sticky" not in r.of("m4")["flags"]
    assert r.of("m7")["action"] == "queued"
    drained = [(d["conversation_id"], d["agent_id"]) for d in r.decisions if d["cause"] == "queue_drain"]
    assert drained == [("s1:b1", r.of("m5")["agent_id"])]


def test_dedicated_agents_for_buyers_and_tags_with_fallback(tmp_path, route):
    extra = '[[dispatch.dedicated]]\nbuyers = ["boss"]\ntags = ["svip"]\nagents = ["a3"]\n'
    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("a1"), agent("a2"), agent("a3", cap=1)),
                       {"p": policy(extra=extra)})
    lines = [
        msg(1, "boss", 1),
        msg(2, "b2", 2, buyer={"tags": ["svip"]}),  # a3 full: normal pick
        msg(3, "b3", 3),
    ]
    r = route(cfg, lines)
    assert r.brief() == [
        ("m1", "assigned", "a3", "message"), ("m2", "assigned", "a1", "message"), ("m3", "assigned", "a2", "message"),
    ]
    assert "dedicated" in r.of("m1")["flags"] and "dedicated" not in r.of("m2")["flags"]


def test_break_keeps_chats_and_gets_no_new_ones(tmp_path, route):
    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("a1"), agent("a2")), {"p": policy()})
    lines = [
        msg(1, "b1", 1), ev("agent_status", 2, agent_id="a1", status="break"),
        msg(2, "b2", 3), msg(3, "b3", 4), msg(4, "b1", 5, "还有个问题"),
        ev("agent_status", 6, agent_id="a1", status="online"), msg(5, "b5", 7),
    ]
    r = route(cfg, lines)
    assert r.brief() == [
        ("m1", "assigned", "a1", "message"), ("m2", "assigned", "a2", "message"),
        ("m3", "assigned", "a2", "message"), ("m4", "assigned", "a1", "message"),
        ("m5", "assigned", "a1", "message"),
    ]


def test_offline_reroutes_open_conversations(tmp_path, route):
    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("a1"), agent("a2", cap=1)), {"p": policy()})
    lines = [msg(1, "b1", 1), msg(2, "b2", 2), msg(3, "b3", 3),
             ev("agent_status", 4, agent_id="a1", status="offline")]
    r = route(cfg, lines)
    assert r.brief() == [
        ("m1", "assigned", "a1", "message"), ("m2", "assigned", "a2", "message"), ("m3", "assigned", "a1", "message"),
        ("s1:b1", "queued", None, "agent_offline"), ("s1:b3", "queued", None, "agent_offline"),
    ]
    r = route(cfg, lines + [ev("close", 5, conversation_id="s1:b2")])
    assert r.brief()[-1] == ("s1:b1", "assigned", "a2", "queue_drain")


def test_offline_keeps_conversations_when_policy_says_keep(tmp_path, route):
    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("a1"), agent("a2")),
                       {"p": policy(extra='on_agent_offline = "keep"')})
    r = route(cfg, [msg(1, "b1", 1), ev("agent_status", 2, agent_id="a1", status="offline"), msg(2, "b1", 3, "喂")])
    assert r.brief() == [("m1", "assigned", "a1", "message"), ("m2", "assigned", "a1", "message")]


def test_skill_expansion_after_timeout(tmp_path, route):
    targets = '[{ skills = ["@skill"], timeout_s = 60 }, { skills = ["@skill", "presale"] }]'
    cfg = write_config(tmp_path, ONE_SHOP,
                       agents_toml(agent("af", skills=["aftersale"], cap=1), agent("pre", skills=["presale"])),
                       {"p": policy(targets=targets)})
    lines = [msg(1, "b1", 0, "[aftersale] 退款"), msg(2, "b2", 10, "[aftersale] 坏了"),
             ev("tick", 69), ev("tick", 70), msg(3, "b3", 80, "[aftersale] 还要等多久")]
    r = route(cfg, lines)
    assert r.brief() == [
        ("m1", "assigned", "af", "message"),
        ("m2", "queued", None, "message"),
        ("s1:b2", "assigned", "pre", "expansion"),
        ("m3", "queued", None, "message"),
    ]
    assert r.decisions[2]["skill"] == "aftersale"


def test_expansion_fires_on_the_clock_of_any_later_line(tmp_path, route):
    targets = '[{ skills = ["@skill"], timeout_s = 30 }, { skills = ["presale"] }]'
    cfg = write_config(tmp_path, ONE_SHOP,
                       agents_toml(agent("af", skills=["aftersale"], cap=1), agent("pre", skills=["presale"])),
                       {"p": policy(targets=targets)})
    r = route(cfg, [msg(1, "b1", 0, "[aftersale] x"), msg(2, "b2", 1, "[aftersale] y"), msg(3, "b3", 100, "[presale] z")])
    assert r.brief() == [
        ("m1", "assigned", "af", "message"), ("m2", "queued", None, "message"),
        ("s1:b2", "assigned", "pre", "expansion"), ("m3", "assigned", "pre", "message"),
    ]


def test_aging_lets_an_old_low_priority_chat_overtake(tmp_path, route):
    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("a1", cap=1)),
                       {"p": policy(extra="aging_per_minute = 2.0")})
    # Effective priority = priority + 2 × minutes waited. b2 (0) queues at t=10, b3 (10) later.
    lines = [msg(1, "b1", 0), msg(2, "b2", 10, "普通"), msg(3, "b3", 300, "!10 急"),
             ev("close", 301, conversation_id="s1:b1")]
    r = route(cfg, lines)
    # b2 waited 291 s = 4.85 min → 9.7 points; b3 has 10 + 0.03: b3 wins.
    assert r.brief()[-1] == ("s1:b3", "assigned", "a1", "queue_drain")
    lines[2] = msg(3, "b3", 320, "!10 急")
    lines[3] = ev("close", 321, conversation_id="s1:b1")
    r = route(cfg, lines)
    # b2 waited 311 s = 5.18 min → 10.37 points; b3 has 10.03: b2 has overtaken.
    assert r.brief()[-1] == ("s1:b2", "assigned", "a1", "queue_drain")


def test_higher_priority_first_then_arrival(tmp_path, route):
    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("a1", cap=1)), {"p": policy(extra="aging_per_minute = 0")})
    lines = [msg(1, "b1", 0), msg(2, "b2", 1), msg(3, "b3", 2, "!5"), msg(4, "b4", 3),
             ev("close", 4, conversation_id="s1:b1"), ev("close", 5, conversation_id="s1:b3"),
             ev("close", 6, conversation_id="s1:b2")]
    r = route(cfg, lines)
    drains = [b for b in r.brief() if b[3] == "queue_drain"]
    assert [d[0] for d in drains] == ["s1:b3", "s1:b2", "s1:b4"]


def test_transfer_to_agent_and_to_skill_keeps_history(tmp_path, route):
    cfg = write_config(tmp_path, ONE_SHOP,
                       agents_toml(agent("a1"), agent("a2"), agent("af", skills=["aftersale"])), {"p": policy()})
    lines = [msg(1, "b1", 0), ev("transfer", 1, conversation_id="s1:b1", to_agent="a2"),
             ev("transfer", 2, conversation_id="s1:b1", to_skill="aftersale"), msg(2, "b1", 3, "谢谢")]
    r = route(cfg, lines)
    assert r.brief() == [
        ("m1", "assigned", "a1", "message"),
        ("s1:b1", "assigned", "a2", "transfer"),
        ("s1:b1", "assigned", "af", "transfer"),
        ("m2", "assigned", "af", "message"),
    ]
    assert r.decisions[2]["skill"] == "aftersale"


def test_bad_transfers_are_reported_and_change_nothing(tmp_path, route):
    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("a1"), agent("a2", cap=1)), {"p": policy()})
    lines = [msg(1, "b1", 0), msg(2, "b2", 1),
             ev("transfer", 2, conversation_id="s1:b1", to_agent="a2"),
             ev("transfer", 3, conversation_id="s1:b1", to_agent="zz"),
             ev("transfer", 4, conversation_id="s1:b1", to_skill="juggling"),
             msg(3, "b1", 5)]
    r = route(cfg, lines, expect_rc=1)
    assert r.stderr.splitlines() == [
        "line 3: agent 'a2' is at capacity (1)", "line 4: unknown agent 'zz'", "line 5: no agent has skill 'juggling'",
    ]
    assert r.brief()[-1] == ("m3", "assigned", "a1", "message")


def test_shift_boundaries(tmp_path, route):
    # T0 is 14:40 Shanghai time. a-night works 15:00-16:00.
    night = agent("night", schedule=Raw('[{ days = "mon-sun", start = "15:00", end = "16:00" }]'))
    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("day", cap=1), night), {"p": policy()})
    lines = [msg(1, "b1", 0), msg(2, "b2", 60),  # night is off shift: queued
             ev("tick", 20 * 60),  # 15:00: night's shift starts, the queue drains to them
             msg(3, "b3", 20 * 60 + 5),
             ev("close", 20 * 60 + 6, conversation_id="s1:b2"),
             msg(4, "b4", 80 * 60 + 1)]  # 16:00:01: night is off again; day is full
    r = route(cfg, lines)
    assert r.brief() == [
        ("m1", "assigned", "day", "message"), ("m2", "queued", None, "message"),
        ("s1:b2", "assigned", "night", "queue_drain"), ("m3", "assigned", "night", "message"),
        ("m4", "queued", None, "message"),
    ]


def test_business_hours_queue_until_opening(tmp_path, route):
    shops = ('[[shops]]\nid = "s1"\npolicy = "p"\n'
             'business_hours = [{ days = "mon-sun", start = "15:00", end = "22:00" }]\n')
    cfg = write_config(tmp_path, shops, agents_toml(agent("a1")), {"p": policy()})
    lines = [msg(1, "b1", 0), ev("tick", 19 * 60), ev("tick", 20 * 60 + 1), msg(2, "b2", 21 * 60)]
    r = route(cfg, lines)
    assert r.brief() == [
        ("m1", "queued", None, "message"), ("s1:b1", "assigned", "a1", "queue_drain"), ("m2", "assigned", "a1", "message"),
    ]


def test_agents_only_serve_their_shops_and_cap_spans_shops(tmp_path, route):
    shops = '[[shops]]\nid = "s1"\npolicy = "p"\n[[shops]]\nid = "s2"\npolicy = "p"\n'
    agents = agents_toml({"id": "a1", "skills": ["presale"], "shops": ["s1", "s2"], "max_concurrent": 2},
                         {"id": "a2", "skills": ["presale"], "shops": ["s2"], "max_concurrent": 5})
    cfg = write_config(tmp_path, shops, agents, {"p": policy()})
    lines = [msg(1, "b1", 1, shop="s1"), msg(2, "b2", 2, shop="s2"), msg(3, "b3", 3, shop="s2"),
             msg(4, "b4", 4, shop="s2"), msg(5, "b5", 5, shop="s1")]
    r = route(cfg, lines)
    assert r.agents() == ["a1", "a2", "a1", "a2", None]


def test_duplicate_message_is_decided_once(tmp_path, route):
    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("a1"), agent("a2")), {"p": policy()})
    r = route(cfg, [msg(1, "b1", 1), msg(1, "b1", 2), msg(2, "b2", 3)])
    assert r.brief() == [("m1", "assigned", "a1", "message"), ("m1", "duplicate", None, "message"),
                         ("m2", "assigned", "a2", "message")]


def test_queued_conversation_that_changes_skill_is_assigned_when_that_group_has_room(tmp_path, route):
    cfg = write_config(tmp_path, ONE_SHOP,
                       agents_toml(agent("pre", cap=1), agent("af", skills=["aftersale"], cap=1)), {"p": policy()})
    r = route(cfg, [msg(1, "b1", 0, "[presale] 在吗"), msg(2, "b2", 1, "[presale] 在吗"), msg(3, "b2", 2, "[aftersale] 我要退款")])
    assert r.brief() == [("m1", "assigned", "pre", "message"), ("m2", "queued", None, "message"),
                         ("m3", "assigned", "af", "message")]


@pytest.mark.anyio
async def test_skill_switch_notifies_observers_only_when_the_agent_changes(tmp_path):
    from router.core.hookspecs import hookimpl
    from router.tools.testing import Harness

    seen = []

    class Observer:
        @hookimpl
        def fenliu_assigned(self, decision):
            seen.append((decision.conversation_id, decision.agent_id))

    cfg = write_config(tmp_path, ONE_SHOP, agents_toml(agent("both", skills=["presale", "logistics"]),
                                                        agent("af", skills=["aftersale"])), {"p": policy()})
    h = Harness.build(cfg, (Observer(),))
    await h.send(shop_id="s1", buyer_id="b1", text="[presale] 在吗")
    await h.send(shop_id="s1", buyer_id="b1", text="[logistics] 发货了吗")
    assert seen == [("s1:b1", "both")], "same agent, same conversation: no new assignment"
    d = await h.send(shop_id="s1", buyer_id="b1", text="[aftersale] 我要退款")
    assert d.agent_id == "af" and seen == [("s1:b1", "both"), ("s1:b1", "af")]


def test_a_returning_buyers_new_conversation_ignores_the_old_ones_timers(tmp_path, route):
    """b2's first conversation waits with an expansion timer due at t=61 and is closed; the
    buyer comes back and is assigned. The old timer must not move the new conversation."""
    targets = '[{ skills = ["@skill"], timeout_s = 60 }, { skills = ["@skill", "presale"] }]'
    cfg = write_config(tmp_path, ONE_SHOP,
                       agents_toml(agent("af", skills=["aftersale"], cap=1), agent("pre", skills=["presale"])),
                       {"p": policy(targets=targets)})
    lines = [msg(1, "b1", 0, "[aftersale] 退款"), msg(2, "b2", 1, "[aftersale] 坏了"),
             ev("close", 2, conversation_id="s1:b2"), ev("close", 3, conversation_id="s1:b1"),
             msg(3, "b2", 4, "[aftersale] 还是坏的"), ev("tick", 120), msg(4, "b2", 121, "[aftersale] 在吗")]
    r = route(cfg, lines)
    assert r.brief() == [
        ("m1", "assigned", "af", "message"), ("m2", "queued", None, "message"),
        ("m3", "assigned", "af", "message"), ("m4", "assigned", "af", "message"),
    ]
