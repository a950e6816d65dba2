"""The Dispatcher's claim hook, without Redis: two routers, each routing one shop (as two
instances each owning a shard), share every agent's cap through an in-memory model of
``claim.lua`` / ``release.lua``, whose announcements carry each agent's load across both. For any
stream of messages and events, no agent is over its cap across both, no conversation is held
twice, each router's own invariants hold, every message gets exactly one decision, and once the
announcements are delivered every router sees each agent's global load (``load + shared_load``)."""

from __future__ import annotations

from collections import Counter

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core.dispatch import DispatchError
from router.core.models import AgentStatusEvent, CloseEvent, Message, TickEvent, TransferEvent
from router.core.pipeline import InputError, Router
from tests.conftest import T0
from tests.policies.test_invariants import SKILLS, agent_st, build, op_st


class SharedCapacity:
    """What Redis holds for the routers: agent status, load, and conversation owners."""

    def __init__(self, routers: list[Router]) -> None:
        self.routers = routers
        self.caps = {aid: st.max_concurrent for aid, st in routers[0].dispatcher.agents.items()}
        self.status = {aid: st.status for aid, st in routers[0].dispatcher.agents.items()}
        self.load: Counter[str] = Counter()
        self.owner: dict[str, str] = {}
        self.announced: list[tuple[str, str, int]] = []
        for r in routers:
            r.dispatcher.claim_hook = self.claim
            r.dispatcher.release_hook = self.release

    def claim(self, agent: str, cid: str) -> bool:
        held = self.owner.get(cid)
        if held is not None:
            return held == agent
        if self.status[agent] != "online" or self.load[agent] >= self.caps[agent]:
            return False
        self.load[agent] += 1
        self.owner[cid] = agent
        self.announced.append(("claimed", agent, self.load[agent]))
        return True

    def release(self, agent: str, cid: str) -> None:
        if self.owner.get(cid) == agent:
            del self.owner[cid]
            self.load[agent] -= 1
            self.announced.append(("freed", agent, self.load[agent]))

    def announce(self) -> list:
        """Deliver the announcements to every router in order, as the control stream does: the
        global load less the router's own is held elsewhere; freed capacity is offered again."""
        out = []
        while self.announced:
            kind, agent, load = self.announced.pop(0)
            for r in self.routers:
                d = r.dispatcher
                out.extend(d.set_shared_load(agent, load - d.agents[agent].load))
                if kind == "freed":
                    out.extend(d.refresh(agent))
        return out

    def check(self) -> None:
        for aid, cap in self.caps.items():
            assert self.load[aid] <= cap, f"{aid} over its cap across routers"
            local = sum(r.dispatcher.agents[aid].load for r in self.routers)
            assert local == self.load[aid], f"{aid}: routers hold {local}, shared load {self.load[aid]}"
            for r in self.routers if not self.announced else ():
                st = r.dispatcher.agents[aid]
                assert st.load + st.shared_load == self.load[aid], f"{aid}: a router sees {st.load} + {st.shared_load}"
        held = {cid: conv.agent_id for r in self.routers for cid, conv in r.dispatcher.conversations.items()
                if conv.agent_id is not None}
        assert held == self.owner
        for r in self.routers:
            r.dispatcher.check_invariants()


async def run(routers: list[Router], ops: list[tuple]) -> None:
    shared = SharedCapacity(routers)
    by_shop = {"s1": routers[0], "s2": routers[1]}
    now = T0
    n = 0
    decided: Counter[str] = Counter()
    sent: list[str] = []
    for op in ops:
        now += 1
        kind = op[0]
        out: list = []
        try:
            if kind == "msg":
                _, shop, buyer, skill, prio = op
                n += 1
                m = Message(shop, f"m{n}", f"b{buyer}", f"[{skill}] !{prio} 你好", ts=now)
                sent.append(m.msg_id)
                for r in routers:
                    if r is not by_shop[shop]:
                        out += await r.handle_event(TickEvent(now))
                out += await by_shop[shop].handle_message(m)
            elif kind == "status":
                aid = sorted(shared.caps)[op[1] % len(shared.caps)]
                shared.status[aid] = op[2]
                for r in routers:
                    out += await r.handle_event(AgentStatusEvent(aid, op[2], ts=now))
            elif kind == "tick":
                now += op[1]
                for r in routers:
                    out += await r.handle_event(TickEvent(now))
            else:
                convs = sorted((cid, r) for r in routers for cid in r.dispatcher.conversations)
                if not convs:
                    continue
                cid, r = convs[op[1] % len(convs)]
                if kind == "close":
                    ev = CloseEvent(cid, ts=now)
                elif kind == "transfer_agent":
                    ev = TransferEvent(cid, to_agent=sorted(shared.caps)[op[2] % len(shared.caps)], ts=now)
                else:
                    ev = TransferEvent(cid, to_skill=op[2], ts=now)
                out += await r.handle_event(ev)
        except (InputError, DispatchError):
            pass
        out += shared.announce()
        for dec in out:
            if dec.msg_id is not None and dec.cause == "message":
                decided[dec.msg_id] += 1
        shared.check()
    assert all(decided[m] == 1 for m in sent), "every message exactly one decision"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    agents=st.lists(agent_st, min_size=1, max_size=6),
    strategy=st.sampled_from(["round_robin", "least_load", "weighted"]),
    offline=st.sampled_from(["reroute", "keep"]),
    ops=st.lists(op_st, min_size=20, max_size=60),
)
def test_shared_caps_hold_across_two_routers(agents, strategy, offline, ops):
    routers = [build(agents, (strategy, strategy), offline) for _ in range(2)]
    anyio.run(run, routers, ops)


def test_a_refused_claim_moves_on_to_the_next_agent():
    agents = [{"skills": SKILLS, "shops": ["*"], "max_concurrent": 1, "weight": 1} for _ in range(2)]
    routers = [build(agents, ("round_robin", "round_robin"), "reroute") for _ in range(2)]
    shared = SharedCapacity(routers)
    first = anyio.run(routers[0].handle_message, Message("s1", "m1", "b1", "你好", ts=T0))[-1]
    second = anyio.run(routers[1].handle_message, Message("s2", "m2", "b2", "你好", ts=T0))[-1]
    assert first.action == second.action == "assigned" and first.agent_id != second.agent_id
    shared.check()


def test_least_load_sees_the_load_an_agent_holds_in_the_other_router():
    """a0 serves both shops and a1 only s2 (the ``everyone`` agent of ``build`` stays offline):
    two conversations of s1 go to a0, one of s2 to a1; the next of s2 goes to a1, whose global
    load (1) is below a0's (2), though a0 holds nothing in the router of s2."""
    agents = [{"skills": SKILLS, "shops": ["*"], "max_concurrent": 5, "weight": 1},
              {"skills": SKILLS, "shops": ["s2"], "max_concurrent": 5, "weight": 1}]
    routers = [build(agents, ("least_load", "least_load"), "reroute") for _ in range(2)]
    shared = SharedCapacity(routers)
    for r in routers:
        anyio.run(r.handle_event, AgentStatusEvent("a2", "offline", ts=T0))
    shared.status["a2"] = "offline"
    picks = []
    for i, (r, shop) in enumerate([(routers[0], "s1"), (routers[0], "s1"), (routers[1], "s2"), (routers[1], "s2")]):
        picks.append(anyio.run(r.handle_message, Message(shop, f"m{i}", f"b{i}", "你好", ts=T0 + i))[-1].agent_id)
        shared.announce()
    assert picks == ["a0", "a0", "a1", "a1"]
    assert (routers[1].dispatcher.agents["a0"].load, routers[1].dispatcher.agents["a0"].shared_load) == (0, 2)
    shared.check()
