"""Where the agent is picked: conversations, agents, queues and the dispatch clock.

The :class:`Dispatcher` holds the routing state of every shop and agent and applies the rules
of DESIGN.md "Dispatch semantics" to it; its data structures, each O(log n) in the number of
agents, are in their own modules:

- :mod:`router.core.pools`: one *pool* per ``(shop, skill)``, a heap of the agents who could
  take a conversation there, keyed by the shop's strategy (:mod:`policies`);
- :mod:`router.core.queues`: one *queue* per ``(shop, skill)`` of waiting conversations, by
  effective priority or (``[queue] discipline = "deadline"``) by platform deadline;
- :mod:`router.core.timers`: one *timer* heap for shift and business-hour boundaries,
  skill-expansion timeouts and reservation timeouts, run whenever the clock advances.

Every method that can move conversations returns the :class:`router.core.models.Decision` s
for them, with their ``cause``.

Shared capacity (several routers over one Redis): set ``claim_hook(agent_id, conversation_id)
-> bool`` and ``release_hook(agent_id, conversation_id)``. Every assignment asks ``claim_hook``
first; a refusal means "full elsewhere" and the agent is skipped here until :meth:`refresh`
(capacity freed elsewhere) or a change of its status. ``release_hook`` runs whenever a conversation leaves its agent. A
refused transfer to a named agent routes the conversation again instead. The load an agent
carries in the other routers reaches this one through :meth:`set_shared_load`, so availability
and ``least_load`` see the agent's global load. With no hooks set (``route``, ``simulate``,
single-instance ``serve``) behaviour is unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

from router.core import clock, i18n
from router.core.models import AgentState, Conversation, Decision
from router.core.pools import AgentPools
from router.core.queues import Queues
from router.core.sticky import StickyMemory
from router.core.timers import Timers, stamp

if TYPE_CHECKING:
    from router.core.config import Config, DispatchConfig


class DispatchError(ValueError):
    """An event that cannot be applied (unknown conversation, agent at capacity …)."""


class Dispatcher:
    """The routing state of every shop and agent, driven by messages, events and the clock."""

    def __init__(self, config: Config, *, reservations: bool = False) -> None:
        self.reservations = reservations
        self.now: float | None = None
        self.agents: dict[str, AgentState] = {}
        self.conversations: dict[str, Conversation] = {}
        self.last_agent = StickyMemory()
        self._seq = itertools.count(1)
        self._conv_seq = itertools.count(1)
        self._timer_seq = itertools.count()
        self._timers = Timers()
        self._shop_open: dict[str, bool] = {}
        self.claim_hook: Callable[[str, str], bool] | None = None
        self.release_hook: Callable[[str, str], None] | None = None
        self._pools = AgentPools(self.agents)
        self.config = config
        self._apply_config(config)

    # -- configuration --------------------------------------------------------------------------

    def _apply_config(self, config: Config) -> None:
        """Rebuild the pools and (empty) queues for ``config``; the caller queues again."""
        self.config = config
        self._policy = {sid: config.policy_for(sid).dispatch for sid in config.shops}
        self._queues = Queues.for_config(self.conversations, config, self._policy)
        self._targets: dict[tuple[str, str], tuple[tuple[tuple[str, ...], float | None], ...]] = {}
        self._pools = AgentPools.for_config(self.agents, config, self._policy, self._pools.refused)
        if self.now is not None:
            clock.start(self, self.now)
        self._pools.recount(config.shops)
        for st in self.agents.values():
            self._pools.touch(st, force=True)

    def update_config(self, config: Config) -> list[Decision]:
        """Swap in a new configuration. Open conversations keep their agents; agents removed
        from the config lose theirs (re-routed); queues are rebuilt and drained under the new
        policy."""
        removed = [a for a in self.agents if a not in config.agents]
        decisions: list[Decision] = []
        orphans = []
        for aid in removed:
            st = self.agents.pop(aid)
            orphans.extend(self.conversations[c] for c in st.conversations if c in self.conversations)
        for conv in list(self.conversations.values()):
            if conv.shop_id not in config.shops:
                self._forget(conv)
        self._timers.keep(("expand", "reserve"))
        self._apply_config(config)
        for conv in orphans:
            conv.agent_id = None
            conv.state = "bot"
            decisions.append(self._route_again(conv, "agent_offline", exclude=None))
        for conv in sorted(self.conversations.values(), key=lambda c: c.seq):
            if conv.state == "queued":
                conv.version += 1
                self._enqueue(conv)
        decisions.extend(self._drain_all())
        return decisions

    # -- clock (router.core.clock) --------------------------------------------------------------

    def due(self, now: float) -> bool:
        """Whether moving the clock to ``now`` has work to do (first call, or a timer due)."""
        return self.now is None or self._timers.due(now)

    def next_due(self) -> float | None:
        """When the next timer (expansion, shift, business hours, reservation) that can still do
        something falls due (see :meth:`Timers.next_due`)."""
        return self._timers.next_due(self.conversations)

    def advance(self, now: float) -> list[Decision]:
        """Move the clock to ``now`` (never backwards) and run what fell due, in time order."""
        return clock.advance(self, now)

    # -- agents ---------------------------------------------------------------------------------

    def _pick(self, shop_id: str, skills: tuple[str, ...], exclude: str | None = None) -> AgentState | None:
        """The strategy's choice among available agents of any of ``skills`` at the shop."""
        if not self._shop_open.get(shop_id, True):
            return None
        return self._pools.pick(shop_id, skills, exclude)

    def _eligible(self, st: AgentState | None, shop_id: str) -> bool:
        return self._pools.eligible(st, shop_id) and self._shop_open.get(shop_id, True)

    def online_count(self, shop_id: str) -> int:
        """Agents online and in shift who may serve this shop (loaded or not)."""
        return self._pools.online.get(shop_id, 0)

    def available_count(self, shop_id: str, skill: str | None = None) -> int:
        if skill is None:
            return self.online_count(shop_id)
        return self._pools.available(shop_id, skill, self._shop_open.get(shop_id, True))

    def set_status(self, agent_id: str, status: str) -> list[Decision]:
        st = self.agents.get(agent_id)
        if st is None:
            raise DispatchError(i18n._("unknown agent {agent!r}", agent=agent_id))
        if st.status == status:
            return []
        self._pools.set_online(st, lambda: setattr(st, "status", status))
        self._pools.readmit(st)
        decisions: list[Decision] = []
        if status == "offline":
            for cid in list(st.conversations):
                conv = self.conversations[cid]
                if self._policy[conv.shop_id].on_agent_offline == "reroute" or conv.state == "reserved":
                    self._release(conv)
                    conv.history.append({"event": "agent_offline", "agent_id": agent_id, "ts": self.now})
                    decisions.append(self._route_again(conv, "agent_offline", exclude=agent_id))
        elif status == "online":
            decisions.extend(self._drain_agent(st))
        return decisions

    # -- conversations --------------------------------------------------------------------------

    def conversation(self, shop_id: str, buyer_id: str) -> Conversation | None:
        return self.conversations.get(f"{shop_id}:{buyer_id}")

    def open(self, shop_id: str, buyer_id: str, now: float, buyer_tags: tuple[str, ...] = (),
             cid: str | None = None) -> Conversation:
        """``cid``: the conversation id (``shop_id:buyer_id``) when the caller has it already."""
        if cid is None:
            cid = f"{shop_id}:{buyer_id}"
        conv = Conversation(cid, shop_id, buyer_id, now, seq=next(self._conv_seq), buyer_tags=buyer_tags, last_ts=now)
        self.conversations[cid] = conv
        return conv

    def targets(self, conv: Conversation) -> tuple[tuple[tuple[str, ...], float | None], ...]:
        """The conversation's routing targets with ``@skill`` resolved (cached per shop and skill)."""
        key = (conv.shop_id, conv.skill or "")
        found = self._targets.get(key)
        if found is None:
            policy = self._policy[conv.shop_id]
            skill = conv.skill or policy.default_skill
            found = self._targets[key] = tuple(
                (tuple(dict.fromkeys(skill if s == "@skill" else s for s in t.skills)), t.timeout_s)
                for t in policy.targets_for(skill)
            )
        return found

    def route_new(self, conv: Conversation) -> tuple[str, str | None, list[str]]:
        """Find an agent for a conversation that needs a human: sticky, dedicated, then targets.
        Returns ``(action, agent_id, flags)``."""
        now = self.now or conv.opened_at
        policy = self._policy[conv.shop_id]
        last = self.last_agent.get(conv.id)
        if last is not None and policy.sticky_hours > 0 and now - last[1] <= policy.sticky_hours * 3600:
            st = self.agents.get(last[0])
            if self._eligible(st, conv.shop_id) and self._claimed(conv, st):  # type: ignore[arg-type]
                self._assign(conv, st)  # type: ignore[arg-type]
                return conv.state, st.id, ["sticky"]  # type: ignore[union-attr]
        dedicated = _dedicated(conv, policy) if policy.dedicated else None
        if dedicated:
            cands = [self.agents[a] for a in dedicated if self._eligible(self.agents.get(a), conv.shop_id)]
            key = self.config.strategies[policy.strategy].key
            for st in sorted(cands, key=key):
                if self._claimed(conv, st):
                    self._assign(conv, st)
                    return conv.state, st.id, ["dedicated"]
        conv.target = 0
        conv.target_since = now
        return self._try_targets(conv, exclude=None)

    def _try_targets(self, conv: Conversation, exclude: str | None) -> tuple[str, str | None, list[str]]:
        targets = self._targets.get((conv.shop_id, conv.skill or "")) or self.targets(conv)
        skills = targets[conv.target if conv.target < len(targets) else -1][0]  # the last when past it
        shop_id = conv.shop_id
        if self._shop_open.get(shop_id, True):
            pick = self._pools.pick
            while (st := pick(shop_id, skills, exclude)) is not None:
                if self.claim_hook is None or self._claimed(conv, st):
                    self._assign(conv, st)
                    return conv.state, st.id, []
        self._enqueue(conv)
        return "queued", None, []

    def _claimed(self, conv: Conversation, st: AgentState) -> bool:
        """Ask the shared claim function (if any); a refused agent is skipped until refreshed."""
        if self.claim_hook is None or self.claim_hook(st.id, conv.id):
            return True
        self._pools.refuse(st)
        return False

    def refresh(self, agent_id: str) -> list[Decision]:
        """Capacity of ``agent_id`` changed elsewhere: consider it again and drain to it."""
        st = self.agents.get(agent_id)
        if st is None:
            return []
        self._pools.readmit(st)
        return self._drain_agent(st)

    def set_shared_load(self, agent_id: str, load: int) -> list[Decision]:
        """``agent_id`` holds ``load`` open conversations through other routers (negative counts
        as 0): re-key it in its pools, and drain to it if it has room."""
        st = self.agents.get(agent_id)
        load = max(0, load)
        if st is None or st.shared_load == load:
            return []
        st.shared_load = load
        self._pools.touch(st)
        return self._drain_agent(st) if st.available else []

    def adopt(self, conv: Conversation) -> None:
        """Take over a conversation restored from shared storage, with its agent's claim
        already held there (no claim is made again)."""
        self.conversations[conv.id] = conv
        st = self.agents.get(conv.agent_id or "")
        if conv.state in ("assigned", "reserved") and st is not None:
            st.load += 1
            st.conversations[conv.id] = None
            self._pools.touch(st)
            if conv.state == "reserved" and conv.reserved_until is not None:
                self._timers.add(conv.reserved_until, next(self._timer_seq), "reserve", conv.id, stamp(conv))
        elif conv.state == "queued":
            conv.agent_id = None
            self._enqueue(conv)
        else:
            conv.agent_id = None

    def _assign(self, conv: Conversation, st: AgentState) -> None:
        conv.version += 1
        conv.agent_id = st.id
        conv.queued_at = None
        if self.reservations:
            conv.state = "reserved"
            conv.reserved_until = (self.now or 0) + self._policy[conv.shop_id].accept_timeout_s
            self._timers.add(conv.reserved_until, next(self._timer_seq), "reserve", conv.id, stamp(conv))
        else:
            conv.state = "assigned"
        st.load += 1
        st.assigned += 1
        st.last_seq = next(self._seq)
        st.conversations[conv.id] = None
        self._pools.touch(st)

    def accept(self, conversation_id: str, agent_id: str) -> None:
        conv = self.conversations.get(conversation_id)
        if conv is None or conv.agent_id != agent_id or conv.state not in ("reserved", "assigned"):
            raise DispatchError(i18n._("conversation {cid!r} is not reserved for {agent!r}", cid=conversation_id, agent=agent_id))
        if conv.state == "reserved":
            conv.state = "assigned"
            conv.reserved_until = None
            conv.version += 1

    def _release(self, conv: Conversation) -> None:
        """Take the conversation off its agent (the caller drains the agent afterwards)."""
        st = self.agents.get(conv.agent_id or "")
        if st is not None and conv.id in st.conversations:
            del st.conversations[conv.id]
            st.load -= 1
            self._pools.touch(st)
            if self.release_hook is not None:
                self.release_hook(st.id, conv.id)
        conv.agent_id = None
        conv.state = "bot"
        conv.version += 1

    def _enqueue(self, conv: Conversation) -> None:
        now = self.now or conv.opened_at
        if conv.queued_at is None:
            conv.queued_at = now
        conv.state = "queued"
        conv.version += 1
        targets = self.targets(conv)
        idx = min(conv.target, len(targets) - 1)
        skills, timeout = targets[idx]
        self._queues.push(conv, skills, now)
        if timeout is not None and idx + 1 < len(targets):
            self._timers.add(conv.target_since + timeout, next(self._timer_seq), "expand", conv.id, stamp(conv))

    def _expand(self, conv: Conversation) -> list[Decision]:
        targets = self.targets(conv)
        if conv.target + 1 >= len(targets):
            return []
        conv.target += 1
        conv.target_since = self.now or conv.target_since
        conv.history.append({"event": "expansion", "target": conv.target, "ts": self.now})
        action, agent, _ = self._try_targets(conv, exclude=None)
        return [_decision(conv, action, agent, "expansion")] if action != "queued" else []

    def reprioritise(self, conv: Conversation, priority: int) -> None:
        """Raise a queued conversation's priority (a later message of a VIP, an urgent word)."""
        if priority > conv.priority:
            conv.priority = priority
            if conv.state == "queued":
                self._enqueue(conv)

    def _route_again(self, conv: Conversation, cause: str, exclude: str | None) -> Decision:
        conv.target = 0
        conv.target_since = self.now or conv.opened_at
        action, agent, _ = self._try_targets(conv, exclude=exclude)
        return _decision(conv, action, agent, cause)

    def _drain_agent(self, st: AgentState, exclude_conv: str | None = None) -> list[Decision]:
        """Give the agent waiting conversations while it has room, highest effective priority
        first (arrival breaks ties)."""
        decisions: list[Decision] = []
        if not self._queues.entries:
            return decisions  # nobody waits (the usual close)
        keys = self._pools.queue_keys.get(st.id, ())
        refused = self._pools.refused
        while st.available and st.id not in refused:
            best = self._queues.best_of(keys, self.now, self._shop_open, exclude_conv)
            if best is None:
                break
            conv = self.conversations[best[3]]
            if not self._claimed(conv, st):
                break
            self._assign(conv, st)
            decisions.append(_decision(conv, conv.state, st.id, "queue_drain"))
        return decisions

    def _drain_shop(self, shop_id: str) -> list[Decision]:
        decisions: list[Decision] = []
        for key in self._queues.keys(shop_id):
            while (entry := self._queues.best(key, self.now)) is not None:
                conv = self.conversations[entry[3]]
                skills, _ = self.targets(conv)[min(conv.target, len(self.targets(conv)) - 1)]
                st = self._pick(shop_id, skills)
                if st is None:
                    break
                if not self._claimed(conv, st):
                    continue
                self._assign(conv, st)
                decisions.append(_decision(conv, conv.state, st.id, "queue_drain"))
        return decisions

    def _drain_all(self) -> list[Decision]:
        out: list[Decision] = []
        for aid in sorted(self.agents):
            out.extend(self._drain_agent(self.agents[aid]))
        return out

    def close(self, conversation_id: str) -> list[Decision]:
        conv = self.conversations.get(conversation_id)
        if conv is None:
            raise DispatchError(i18n._("no open conversation {cid!r}", cid=conversation_id))
        agent = conv.agent_id
        if agent is not None and conv.state == "assigned":
            self.last_agent.remember(conv.id, agent, self.now or conv.last_ts, self._policy)
        self._release(conv)
        self._forget(conv)
        st = self.agents.get(agent or "")
        return self._drain_agent(st) if st is not None else []

    def _forget(self, conv: Conversation) -> None:
        if conv.agent_id is not None:
            self._release(conv)
        conv.version += 1
        self.conversations.pop(conv.id, None)

    def transfer(self, conversation_id: str, to_agent: str | None = None, to_skill: str | None = None) -> list[Decision]:
        """Move an open conversation to a named agent (who must be free to take it now) or to
        another skill group (routed again, never back to the agent it leaves)."""
        conv = self.conversations.get(conversation_id)
        if conv is None:
            raise DispatchError(i18n._("no open conversation {cid!r}", cid=conversation_id))
        old = conv.agent_id
        decisions = _transfer(self, conv, to_agent, to_skill)
        conv.history.append({"event": "transfer", "from": old, "to_agent": to_agent, "to_skill": to_skill, "ts": self.now})
        prev = self.agents.get(old or "")
        if prev is not None:
            decisions.extend(self._drain_agent(prev))
        return decisions

    def change_skill(self, conv: Conversation, skill: str) -> list[Decision]:
        """A message moved an open conversation to another skill group: keep its agent when the
        agent has that skill, else route it again (a waiting one at once). Returns the decisions
        for *other* conversations this caused (the freed agent draining the queue)."""
        conv.skill = skill
        agent = conv.agent_id
        if agent is None:
            if conv.state == "queued":
                conv.target = 0
                conv.target_since = self.now or conv.opened_at
                self._try_targets(conv, exclude=None)
            return []
        acfg = self.config.agents.get(agent)
        if acfg is not None and skill in acfg.skills:
            return []
        self._release(conv)
        conv.queued_at = None
        self._route_again(conv, "message", exclude=agent)
        conv.history.append({"event": "skill_change", "from": agent, "to_skill": skill, "ts": self.now})
        prev = self.agents.get(agent)
        return self._drain_agent(prev) if prev is not None else []

    # -- introspection (invariant checks, stats, the workbench) ---------------------------------

    def queued(self) -> list[Conversation]:
        return [c for c in self.conversations.values() if c.state == "queued"]

    def check_invariants(self) -> None:
        """Raise AssertionError if the state breaks a routing invariant (used by tests)."""
        check_invariants(self)


def _transfer(d: Dispatcher, conv: Conversation, to_agent: str | None, to_skill: str | None) -> list[Decision]:
    """The decisions of a transfer; a named agent refused by the shared claim routes it again."""
    old = conv.agent_id
    if to_agent is not None:
        st = _transfer_target(d, conv, to_agent)
        d._release(conv)
        if not d._claimed(conv, st):
            return [d._route_again(conv, "transfer", exclude=old)]
        reservations, d.reservations = d.reservations, False
        d._assign(conv, st)
        d.reservations = reservations
        return [_decision(conv, "assigned", st.id, "transfer")]
    assert to_skill is not None
    if not d._pools.has_skill(to_skill):
        raise DispatchError(i18n._("no agent has skill {skill!r}", skill=to_skill))
    d._release(conv)
    conv.skill = to_skill
    conv.queued_at = None
    return [d._route_again(conv, "transfer", exclude=old)]


def _transfer_target(d: Dispatcher, conv: Conversation, to_agent: str) -> AgentState:
    """The agent a conversation is transferred to by name, if it may take it now."""
    st = d.agents.get(to_agent)
    if st is None:
        raise DispatchError(i18n._("unknown agent {agent!r}", agent=to_agent))
    if to_agent == conv.agent_id:
        raise DispatchError(i18n._("conversation {cid!r} is already with {agent!r}", cid=conv.id, agent=to_agent))
    if conv.shop_id not in d._pools.shops.get(to_agent, ()):
        raise DispatchError(i18n._("agent {agent!r} may not serve shop {shop!r}", agent=to_agent, shop=conv.shop_id))
    if st.status != "online" or not st.in_shift:
        raise DispatchError(i18n._("agent {agent!r} is not online", agent=to_agent))
    if st.load >= st.max_concurrent:
        raise DispatchError(i18n._("agent {agent!r} is at capacity ({n})", agent=to_agent, n=st.max_concurrent))
    return st


def _dedicated(conv: Conversation, policy: DispatchConfig) -> list[str]:
    """The agents dedicated to the conversation's buyer (by id or tag), in the policy's order."""
    out: list[str] = []
    for d in policy.dedicated:
        if conv.buyer_id in d.buyers or any(t in d.tags for t in conv.buyer_tags):
            out.extend(a for a in d.agents if a not in out)
    return out


def _decision(conv: Conversation, action: str, agent_id: str | None, cause: str) -> Decision:
    return Decision(
        msg_id=None, shop_id=conv.shop_id, conversation_id=conv.id, action=action if action != "reserved" else "assigned",  # type: ignore[arg-type]
        agent_id=agent_id, skill=conv.skill, priority=conv.priority, cause=cause,  # type: ignore[arg-type]
    )


def check_invariants(d: Dispatcher) -> None:
    """Raise AssertionError if the state breaks a routing invariant (used by tests)."""
    owners: dict[str, str] = {}
    for st in d.agents.values():
        assert st.load == len(st.conversations), f"{st.id}: load {st.load} != {len(st.conversations)}"
        assert st.load <= st.max_concurrent, f"{st.id} over capacity"
        assert st.shared_load >= 0, f"{st.id}: shared load {st.shared_load}"
        for cid in st.conversations:
            assert cid not in owners, f"{cid} held by {owners.get(cid)} and {st.id}"
            owners[cid] = st.id
            assert d.conversations[cid].agent_id == st.id
    for conv in d.conversations.values():
        if conv.agent_id is not None:
            assert owners.get(conv.id) == conv.agent_id, f"{conv.id} agent mismatch"
        if conv.state == "queued":
            skills, _ = d.targets(conv)[min(conv.target, len(d.targets(conv)) - 1)]
            assert d._pick(conv.shop_id, skills) is None, f"{conv.id} queued while an agent has room"
