"""``[queue] discipline = "deadline"``: the platform's reply deadline decides who waits, with a
bound that keeps late conversations from starving (policies/deadline.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core.config import ConfigErrors, load_config
from router.core.models import CloseEvent, Message, TickEvent
from router.core.pipeline import Router
from tests.conftest import T0
from tests.policies.conftest import ONE_SHOP, agents_toml, ev, msg, policy, write_config

QUEUE = '[queue]\ndiscipline = "deadline"\nstarve_after_s = 120\npriority_s = 1\n'
ONE_AGENT = agents_toml({"id": "a1", "skills": ["presale"], "max_concurrent": 1})


def test_a_bad_queue_section_is_reported_with_its_key_path(tmp_path):
    root = write_config(tmp_path / "c", ONE_SHOP, ONE_AGENT,
                        {"p": policy(extra='[queue]\ndiscipline = "edf"\n[queue.platforms.pinduoduo]\nreply_window = ["8am", "23:00"]\n')})
    with pytest.raises(ConfigErrors) as exc:
        load_config(root)
    text = str(exc.value)
    assert "p.toml: queue.discipline: expected one of" in text or "p.toml: queue" in text


def test_a_conversation_that_can_still_make_its_deadline_goes_before_one_that_cannot(tmp_path, route):
    """One agent, busy 0–200 s. c2 (t = 5) misses its 185 s deadline anyway; c3 (t = 100) can
    still make 280 s: under the deadline discipline c3 goes first, under priority order c2 does.
    Then c4 (t = 190, deadline 370) waits behind c2, which by t = 330 is 145 s past its deadline,
    more than ``starve_after_s = 120``: the bound puts it first."""
    lines = [msg(1, "c1", 0), msg(2, "c2", 5), msg(3, "c3", 100), msg(4, "c4", 190),
             ev("close", 200, conversation_id="s1:c1"), ev("close", 330, conversation_id="s1:c3"),
             ev("close", 340, conversation_id="s1:c2")]
    dl = route(write_config(tmp_path / "dl", ONE_SHOP, ONE_AGENT, {"p": policy(extra="sticky_hours = 0\n" + QUEUE)}), lines)
    drained = [d["conversation_id"] for d in dl.decisions if d["cause"] == "queue_drain"]
    assert drained == ["s1:c3", "s1:c2", "s1:c4"]
    fifo = route(write_config(tmp_path / "fifo", ONE_SHOP, ONE_AGENT, {"p": policy(extra="sticky_hours = 0\n")}), lines)
    assert [d["conversation_id"] for d in fifo.decisions if d["cause"] == "queue_drain"][0] == "s1:c2"


def test_a_conversation_too_close_to_its_deadline_for_a_reply_waits_behind_a_fresher_one(tmp_path, route):
    """One agent, busy 0–150 s. At 150 s c2 (t = 10) has 40 s left of its 3 minutes and c3
    (t = 100) 130 s. With ``reply_margin_s = 60`` (about what an agent needs to accept and
    reply) c2 can no longer make it and c3 goes first, then c4 (t = 160, in time) at 200 s.
    The margin changes who is in time, not the starvation bound: at 400 s c2 is 210 s past its
    deadline, more than ``starve_after_s = 120``, and goes before c5 (t = 350, in time).
    Without a margin plain EDF takes c2 first, at the edge of its deadline."""
    lines = [msg(1, "c1", 0), msg(2, "c2", 10), msg(3, "c3", 100), ev("close", 150, conversation_id="s1:c1"),
             msg(4, "c4", 160), ev("close", 200, conversation_id="s1:c3"), msg(5, "c5", 350),
             ev("close", 400, conversation_id="s1:c4")]
    margin = QUEUE + "reply_margin_s = 60\n"
    r = route(write_config(tmp_path / "m", ONE_SHOP, ONE_AGENT, {"p": policy(extra="sticky_hours = 0\n" + margin)}), lines)
    assert [d["conversation_id"] for d in r.decisions if d["cause"] == "queue_drain"] == ["s1:c3", "s1:c4", "s1:c2"]
    plain = route(write_config(tmp_path / "p", ONE_SHOP, ONE_AGENT, {"p": policy(extra="sticky_hours = 0\n" + QUEUE)}), lines)
    assert [d["conversation_id"] for d in plain.decisions if d["cause"] == "queue_drain"][0] == "s1:c2"


def test_the_window_and_deadline_come_per_platform(tmp_path, route):
    """A platform whose window has closed: nothing counts, so the queue is served earliest
    deadline first, which is arrival order — even for a conversation that is late."""
    extra = QUEUE + '[queue.platforms.pinduoduo]\nreply_within_s = 30\nreply_window = ["00:00", "00:01"]\n'
    lines = [msg(1, "c1", 0), msg(2, "c2", 5), msg(3, "c3", 100), ev("close", 200, conversation_id="s1:c1")]
    r = route(write_config(tmp_path / "c", ONE_SHOP, ONE_AGENT, {"p": policy(extra="sticky_hours = 0\n" + extra)}), lines)
    assert [d["conversation_id"] for d in r.decisions if d["cause"] == "queue_drain"] == ["s1:c2"]


def _build(agents: int, starve: float, margin: float = 0.0) -> Router:
    root = Path(tempfile.mkdtemp(prefix="fenliu-deadline-"))
    write_config(root, ONE_SHOP, agents_toml(*({"id": f"a{i}", "skills": ["presale"], "max_concurrent": 1} for i in range(agents))),
                 {"p": policy(extra=f'sticky_hours = 0\n[queue]\ndiscipline = "deadline"\nstarve_after_s = {starve}\n'
                                    f'reply_margin_s = {margin}\npriority_s = 2\n')})
    return Router(load_config(root))


async def _run(router: Router, ops: list[tuple], starve: float, margin: float = 0.0) -> None:
    d = router.dispatcher
    now = T0
    n = 0
    for op in ops:
        now += op[1]
        if op[0] == "msg":
            n += 1
            await router.handle_message(Message("s1", f"m{n}", f"b{n}", f"[presale] !{op[2]} 在吗", ts=now))
            continue
        if op[0] == "tick":
            await router.handle_event(TickEvent(now))
            continue
        busy = sorted((c for c in d.conversations.values() if c.state == "assigned"), key=lambda c: c.id)
        if not busy:
            continue
        await router.advance(now)
        before = {c.id: c.opened_at + 180 - 2 * c.priority for c in d.conversations.values() if c.state == "queued"}
        out = await router.handle_event(CloseEvent(busy[op[2] % len(busy)].id, ts=now))
        drained = [x.conversation_id for x in out if x.cause == "queue_drain"]
        if not before:
            assert not drained
            continue
        assert len(drained) == 1  # one agent of capacity 1 freed up
        chosen = before[drained[0]]
        starving = [t for t in before.values() if now - t > starve]
        live = [t for t in before.values() if t >= now + margin]
        if starving:
            # the bound: nobody goes before a conversation this late, oldest deadline first
            assert chosen == min(starving)
        elif live:
            assert chosen == min(live)
        else:
            assert chosen == min(before.values())
        d.check_invariants()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    agents=st.integers(1, 2),
    starve=st.sampled_from([0.0, 60.0, 120.0]),
    margin=st.sampled_from([0.0, 45.0, 120.0]),
    ops=st.lists(st.one_of(
        st.tuples(st.just("msg"), st.integers(0, 40), st.integers(0, 30)),
        st.tuples(st.just("msg"), st.integers(0, 40), st.just(0)),
        st.tuples(st.just("close"), st.integers(0, 400), st.integers(0, 5)),
        st.tuples(st.just("tick"), st.integers(1, 300)),
    ), min_size=1, max_size=80),
)
def test_every_pick_follows_the_deadline_order_and_the_starvation_bound(agents, starve, margin, ops):
    """Whatever arrives and closes, each freed agent takes: a conversation more than
    ``starve_after_s`` past its deadline if there is one (the earliest such), else the earliest
    deadline still ``reply_margin_s`` or more ahead, else the earliest of the rest. The margin
    never delays the bound: a conversation is starving ``starve_after_s`` after its deadline
    whatever the margin."""
    anyio.run(_run, _build(agents, starve, margin), ops, starve, margin)
