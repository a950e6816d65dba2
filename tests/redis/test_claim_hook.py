"""The Dispatcher's claim hook, without Redis: two routers, each routing one shop (as two
instances each owning a shard), share every agent's cap through an in-memory model of
``claim.lua`` / ``release.lua``. For any stream of messages and events, no agent is over its cap
across both, no conversation is held twice, each router's own invariants hold, and every message
gets exactly one decision."""

from __future__ import annotations

from collections import Counter

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.dispatch import DispatchError
from router.models import AgentStatusEvent, CloseEvent, Message, TickEvent, TransferEvent
from router.pipeline import InputError, Router
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
        self.freed: list[str] = []
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
        return True

    def release(self, agent: str, cid: str) -> None:
        if self.owner.get(cid) == agent:
            del self.owner[cid]
            self.load[agent] -= 1
            self.freed.append(agent)

    def announce(self) -> list:
        """Deliver "freed" announcements to every router, as the control stream does."""
        out = []
        while self.freed:
            agent = self.freed.pop(0)
            for r in self.routers:
                out.extend(r.dispatcher.refresh(agent))
        return out

    def check(self) -> None:
        for aid, cap in self.caps.items():
            assert self.load[aid] <= cap, f"{aid} over its cap across routers"
            local = sum(r.dispatcher.agents[aid].load for r in self.routers)
            assert local == self.load[aid], f"{aid}: routers hold {local}, shared load {self.load[aid]}"
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
