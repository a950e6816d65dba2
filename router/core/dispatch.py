"""Where the agent is picked: conversations, agents, queues and the dispatch clock.

Data structures, chosen so that every operation is O(log n) in the number of agents:

- one *pool* per ``(shop, skill)``: a heap of the agents who could take a conversation there,
  keyed by the shop's strategy (:mod:`policies`). Entries are invalidated lazily: each carries
  the agent's ``version`` when pushed, and an agent whose key or availability changes is
  pushed again (a change that keeps both, such as a round-robin release below capacity, pushes
  nothing);
- one *queue* per ``(shop, skill)``: a heap of waiting conversations keyed by
  ``priority - aging_per_minute × queued_at / 60`` (the effective priority's time-invariant part,
  so aging needs no re-sorting), then arrival. Under the policy's ``[queue] discipline =
  "deadline"`` (:mod:`policies.deadline`) the heap is keyed by the platform deadline instead,
  with a second heap per queue for the conversations past it;
- one *timer* heap for shift and business-hour boundaries, skill-expansion timeouts and
  reservation timeouts, run whenever the clock advances.

The semantics are those of DESIGN.md "Dispatch semantics". Every method that can move
conversations returns the :class:`router.core.models.Decision` s for them, with their ``cause``.

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

import heapq
import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from router.core import i18n
from router.core.models import AgentState, Conversation, Decision

if TYPE_CHECKING:
    from router.core.config import Config, DispatchConfig

_COMPACT_MIN = 64


def _stamp(conv: Conversation) -> tuple[int, int]:
    """What a conversation's timer must still match to fire. The version alone is not enough: a
    buyer who comes back opens a new conversation under the same id, whose versions start again,
    so a timer left by the old one could otherwise fire on the new one."""
    return (conv.seq, conv.version)


class DispatchError(ValueError):
    """An event that cannot be applied (unknown conversation, agent at capacity …)."""


class _Pool:
    """Available agents of one (shop, skill), smallest strategy key first. An entry is the
    key's fields followed by the agent's version and id, one flat tuple: comparing nested key
    tuples was a tenth of all instructions routing a message."""

    __slots__ = ("heap", "key", "members", "limit")

    def __init__(self, key: Any) -> None:
        self.heap: list[tuple[Any, ...]] = []
        self.key = key
        self.members = 0
        self.limit = _COMPACT_MIN

    def add_member(self) -> None:
        self.members += 1
        self.limit = 4 * self.members + _COMPACT_MIN


class _DeadlineRule:
    """A shop's reply deadline under ``[queue] discipline = "deadline"`` (:mod:`policies.deadline`)."""

    __slots__ = ("within", "window", "starve_after_s", "priority_s", "margin")

    def __init__(self, within: float, window: Any, starve_after_s: float, priority_s: float, margin: float = 0.0) -> None:
        self.within = within
        self.window = window
        self.starve_after_s = starve_after_s
        self.priority_s = priority_s
        self.margin = margin  # ``reply_margin_s``: closer to its deadline than this, a conversation is late

    def deadline(self, conv: Conversation) -> tuple[float, bool]:
        """``(deadline, counts)``: a conversation counts for the platform when its first message
        fell in the reply window and no human has had it yet (transferred or re-routed ones have)."""
        counts = self.window.is_open(conv.opened_at) and not any(
            h.get("event") in ("transfer", "agent_offline") for h in conv.history)
        return conv.opened_at + self.within - self.priority_s * conv.priority, counts


def _deadline_rule(config: Config, shop_id: str) -> _DeadlineRule | None:
    from router.core.schedule import Schedule, Window

    section = getattr(config.policy_for(shop_id), "queue", None)
    if section is None or section.discipline != "deadline":
        return None
    shop = config.shops[shop_id]
    defaults = config.main.defaults
    plat = section.platforms.get(shop.platform)
    within = (plat.reply_within_s if plat is not None else None) or defaults.reply_within_s
    start, end = (plat.reply_window if plat is not None else None) or defaults.reply_window
    window = Schedule((Window("mon-sun", start, end),), shop.timezone or defaults.timezone)
    return _DeadlineRule(within, window, section.starve_after_s, section.priority_s, section.reply_margin_s)


class Dispatcher:
    """The routing state of every shop and agent, driven by messages, events and the clock."""

    def __init__(self, config: Config, *, reservations: bool = False) -> None:
        self.reservations = reservations
        self.now: float | None = None
        self.agents: dict[str, AgentState] = {}
        self.conversations: dict[str, Conversation] = {}
        self.last_agent: dict[str, tuple[str, float]] = {}
        self._seq = itertools.count(1)
        self._conv_seq = itertools.count(1)
        self._timer_seq = itertools.count()
        self._timers: list[tuple[float, int, str, str, Any]] = []
        self._shop_open: dict[str, bool] = {}
        self._shop_online: dict[str, int] = {}
        self.claim_hook: Callable[[str, str], bool] | None = None
        self.release_hook: Callable[[str, str], None] | None = None
        self._refused: set[str] = set()
        self._listed: dict[str, tuple[Any, ...]] = {}
        self.config = config
        self._apply_config(config)

    # -- configuration --------------------------------------------------------------------------

    def _apply_config(self, config: Config) -> None:
        self.config = config
        self._policy = {sid: config.policy_for(sid).dispatch for sid in config.shops}
        self._deadline = {sid: rule for sid in config.shops if (rule := _deadline_rule(config, sid)) is not None}
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._queues: dict[tuple[str, str], list[tuple[float, int, int, str]]] = {}
        self._late: dict[tuple[str, str], list[tuple[float, int, int, str]]] = {}
        self._agent_pools: dict[str, list[_Pool]] = {}
        self._agent_groups: dict[str, tuple[tuple[Any, tuple[_Pool, ...]], ...]] = {}
        self._targets: dict[tuple[str, str], tuple[tuple[tuple[str, ...], float | None], ...]] = {}
        self._agent_queue_keys: dict[str, list[tuple[str, str]]] = {}
        self._agent_shops: dict[str, tuple[str, ...]] = {}
        all_shops = tuple(config.shops)
        for aid, acfg in config.agents.items():
            st = self.agents.get(aid)
            if st is None:
                st = self.agents[aid] = AgentState(aid, acfg.max_concurrent, acfg.weight)
            st.max_concurrent, st.weight = acfg.max_concurrent, acfg.weight
            shops = all_shops if "*" in acfg.shops else tuple(s for s in acfg.shops if s in config.shops)
            self._agent_shops[aid] = shops
            pools = []
            keys = []
            for sid in shops:
                strategy = config.strategies[self._policy[sid].strategy]
                for skill in acfg.skills:
                    pool = self._pools.get((sid, skill))
                    if pool is None:
                        pool = self._pools[(sid, skill)] = _Pool(strategy.key)
                    pool.add_member()
                    pools.append(pool)
                    keys.append((sid, skill))
            self._agent_pools[aid] = pools
            self._agent_queue_keys[aid] = keys
            groups: dict[Any, list[_Pool]] = {}
            for pool in pools:
                groups.setdefault(pool.key, []).append(pool)
            self._agent_groups[aid] = tuple((k, tuple(v)) for k, v in groups.items())
        if self.now is not None:
            self._init_clocked(self.now)
        self._recount_online()
        self._listed = {}
        for st in self.agents.values():
            self._touch(st, force=True)

    def _recount_online(self) -> None:
        counts = {sid: 0 for sid in self.config.shops}
        for aid, shops in self._agent_shops.items():
            st = self.agents[aid]
            if st.status == "online" and st.in_shift:
                for sid in shops:
                    counts[sid] += 1
        self._shop_online = counts

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
        self._timers = [t for t in self._timers if t[2] in ("expand", "reserve")]
        heapq.heapify(self._timers)
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

    # -- clock --------------------------------------------------------------------------------

    def _init_clocked(self, now: float) -> None:
        for sid, shop in self.config.shops.items():
            self._shop_open[sid] = shop.is_open(now)
            self._schedule_change("shop", sid, shop.hours.next_change(now))
        for aid, acfg in self.config.agents.items():
            st = self.agents[aid]
            st.in_shift = acfg.shift.is_open(now)
            self._schedule_change("shift", aid, acfg.shift.next_change(now))

    def _schedule_change(self, kind: str, ident: str, when: float | None) -> None:
        if when is not None:
            heapq.heappush(self._timers, (when, next(self._timer_seq), kind, ident, 0))

    def due(self, now: float) -> bool:
        """Whether moving the clock to ``now`` has work to do (first call, or a timer due)."""
        return self.now is None or (bool(self._timers) and self._timers[0][0] <= now)

    def next_due(self) -> float | None:
        """When the next timer (expansion, shift, business hours, reservation) that can still do
        something falls due. Timers of conversations that moved on since (a reservation
        accepted, a queued chat assigned before its expansion, a closed one) are dropped from
        the head on the way: firing them would do nothing, so a caller that sleeps until the
        next timer (the simulator) need not wake for them."""
        timers = self._timers
        conversations = self.conversations
        while timers:
            when, _, kind, ident, stamp = timers[0]
            if kind == "reserve" or kind == "expand":
                conv = conversations.get(ident)
                if conv is None or _stamp(conv) != stamp or (kind == "reserve" and conv.state != "reserved"):
                    heapq.heappop(timers)
                    continue
            return when
        return None

    def advance(self, now: float) -> list[Decision]:
        """Move the clock to ``now`` (never backwards) and run what fell due, in time order."""
        if self.now is None:
            self.now = now
            self._init_clocked(now)
            self._recount_online()
            for st in self.agents.values():
                self._touch(st, force=True)
            return []
        if now < self.now:
            return []
        decisions: list[Decision] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, kind, ident, version = heapq.heappop(timers)
            self.now = max(self.now, when)
            decisions.extend(self._fire(kind, ident, version))
        self.now = now
        return decisions

    def _fire(self, kind: str, ident: str, version: Any) -> list[Decision]:
        now = self.now
        assert now is not None
        if kind == "shift":
            acfg = self.config.agents.get(ident)
            st = self.agents.get(ident)
            if acfg is None or st is None:
                return []
            self._set_online_count(st, lambda: setattr(st, "in_shift", acfg.shift.is_open(now)))
            self._schedule_change("shift", ident, acfg.shift.next_change(now))
            self._touch(st)
            return self._drain_agent(st) if st.available else []
        if kind == "shop":
            shop = self.config.shops.get(ident)
            if shop is None:
                return []
            self._shop_open[ident] = shop.is_open(now)
            self._schedule_change("shop", ident, shop.hours.next_change(now))
            return self._drain_shop(ident) if self._shop_open[ident] else []
        conv = self.conversations.get(ident)
        if conv is None or _stamp(conv) != version:
            return []
        if kind == "expand":
            return self._expand(conv)
        if kind == "reserve" and conv.state == "reserved":
            agent = conv.agent_id
            self._release(conv)
            conv.history.append({"event": "reservation_timeout", "agent_id": agent, "ts": now})
            out = [self._route_again(conv, "reservation_timeout", exclude=agent)]
            st = self.agents.get(agent or "")
            if st is not None:
                out.extend(self._drain_agent(st, exclude_conv=conv.id))
            return out
        return []

    # -- agents ---------------------------------------------------------------------------------

    def _set_online_count(self, st: AgentState, change: Any) -> None:
        before = st.status == "online" and st.in_shift
        change()
        after = st.status == "online" and st.in_shift
        if before != after:
            for sid in self._agent_shops.get(st.id, ()):
                self._shop_online[sid] += 1 if after else -1

    def _touch(self, st: AgentState, force: bool = False) -> None:
        """Re-key the agent in all its pools after a change to its state. Lazy: the entries
        already in the heaps stay valid while the agent stays available under the same keys (a
        round-robin agent released below capacity, say), so only a new key or a return to
        availability pushes; becoming unavailable bumps the version, which invalidates them
        (stale entries are skipped when they reach the top, and swept when a heap grows past 4×
        its members). ``force`` pushes anyway, for heaps that may have lost the agent's entries
        (rebuilt pools, an agent no longer refused)."""
        aid = st.id
        listed = self._listed
        if not st.available:
            if aid in listed:
                del listed[aid]
                st.version += 1
            return
        groups = self._agent_groups.get(aid, ())
        # one key per strategy among the agent's shops; usually one strategy, so one key
        single = len(groups) == 1
        keys = groups[0][0](st) if single else tuple([key(st) for key, _ in groups])
        if not force:
            old = listed.get(aid)
            if old == keys:
                return
            if single and old is not None and keys > old:
                # a key that only grew (an assignment, under every built-in strategy): the
                # entries already pushed sit too high and ``_top`` re-keys one when it surfaces,
                # instead of a push into each of the agent's pools now
                listed[aid] = keys
                return
        listed[aid] = keys
        st.version += 1
        version = st.version
        push = heapq.heappush
        for i, (_, pools) in enumerate(groups):
            entry = (*(keys if single else keys[i]), version, aid)
            for pool in pools:
                heap = pool.heap
                push(heap, entry)
                if len(heap) > pool.limit:
                    self._compact(pool)

    def _compact(self, pool: _Pool) -> None:
        agents = self.agents
        refused = self._refused
        pool.heap = [e for e in pool.heap if (a := agents.get(e[-1])) is not None and a.version == e[-2]
                     and a.id not in refused]
        heapq.heapify(pool.heap)

    def _top(self, pool: _Pool) -> tuple[Any, ...] | None:
        """The pool's best entry that is still current. An entry is pushed only while its agent
        is available, and a loss of availability or a smaller key bumps its version, so a
        matching version means the agent is still available with that key or a larger one (a
        key that grew is not pushed, see :meth:`_touch`): such an entry is re-keyed when it
        reaches the top, and the top is right because no agent's key is below its entry's."""
        heap = pool.heap
        agents = self.agents
        refused = self._refused
        key = pool.key
        while heap:
            entry = heap[0]
            a = agents.get(entry[-1])
            if a is not None and a.version == entry[-2] and a.id not in refused:
                current = (*key(a), a.version, a.id)
                if current == entry:
                    return entry
                heapq.heapreplace(heap, current)
                continue
            heapq.heappop(heap)
        return None

    def _pick(self, shop_id: str, skills: Iterable[str], exclude: str | None = None) -> AgentState | None:
        """The strategy's choice among available agents of any of ``skills`` at the shop."""
        if not self._shop_open.get(shop_id, True):
            return None
        best = None
        for skill in skills:
            pool = self._pools.get((shop_id, skill))
            if pool is None:
                continue
            entry = self._top(pool)
            if entry is not None and entry[-1] == exclude:
                entry = self._second(pool, exclude)
            if entry is not None and (best is None or entry < best):
                best = entry
        return self.agents[best[-1]] if best is not None else None

    def _second(self, pool: _Pool, exclude: str) -> tuple[Any, ...] | None:
        held = []
        heap = pool.heap
        found = None
        while (entry := self._top(pool)) is not None:
            if entry[-1] != exclude:
                found = entry
                break
            held.append(heapq.heappop(heap))
        for e in held:
            heapq.heappush(heap, e)
        return found

    def _eligible(self, st: AgentState | None, shop_id: str) -> bool:
        return (
            st is not None
            and st.available
            and st.id not in self._refused
            and shop_id in self._agent_shops.get(st.id, ())
            and self._shop_open.get(shop_id, True)
        )

    def online_count(self, shop_id: str) -> int:
        """Agents online and in shift who may serve this shop (loaded or not)."""
        return self._shop_online.get(shop_id, 0)

    def available_count(self, shop_id: str, skill: str | None = None) -> int:
        if skill is None:
            return self.online_count(shop_id)
        pool = self._pools.get((shop_id, skill))
        return 0 if pool is None else len({e[-1] for e in pool.heap if self._eligible(self.agents.get(e[-1]), shop_id)})

    def set_status(self, agent_id: str, status: str) -> list[Decision]:
        st = self.agents.get(agent_id)
        if st is None:
            raise DispatchError(i18n._("unknown agent {agent!r}", agent=agent_id))
        if st.status == status:
            return []
        self._refused.discard(agent_id)
        self._set_online_count(st, lambda: setattr(st, "status", status))
        self._touch(st, force=True)
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

    def open(self, shop_id: str, buyer_id: str, now: float, buyer_tags: tuple[str, ...] = ()) -> Conversation:
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
        dedicated = self._dedicated(conv, policy) if policy.dedicated else None
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

    def _dedicated(self, conv: Conversation, policy: DispatchConfig) -> list[str]:
        out: list[str] = []
        for d in policy.dedicated:
            if conv.buyer_id in d.buyers or any(t in d.tags for t in conv.buyer_tags):
                out.extend(a for a in d.agents if a not in out)
        return out

    def _try_targets(self, conv: Conversation, exclude: str | None) -> tuple[str, str | None, list[str]]:
        targets = self.targets(conv)
        skills, _ = targets[min(conv.target, len(targets) - 1)]
        while (st := self._pick(conv.shop_id, skills, exclude)) is not None:
            if self._claimed(conv, st):
                self._assign(conv, st)
                return conv.state, st.id, []
        self._enqueue(conv)
        return "queued", None, []

    def _claimed(self, conv: Conversation, st: AgentState) -> bool:
        """Ask the shared claim function (if any); a refused agent is skipped until refreshed."""
        if self.claim_hook is None or self.claim_hook(st.id, conv.id):
            return True
        self._refused.add(st.id)
        return False

    def refresh(self, agent_id: str) -> list[Decision]:
        """Capacity of ``agent_id`` changed elsewhere: consider it again and drain to it."""
        st = self.agents.get(agent_id)
        if st is None:
            return []
        self._refused.discard(agent_id)
        self._touch(st, force=True)
        return self._drain_agent(st)

    def set_shared_load(self, agent_id: str, load: int) -> list[Decision]:
        """``agent_id`` holds ``load`` open conversations through other routers (negative counts
        as 0): re-key it in its pools, and drain to it if it has room."""
        st = self.agents.get(agent_id)
        load = max(0, load)
        if st is None or st.shared_load == load:
            return []
        st.shared_load = load
        self._touch(st)
        return self._drain_agent(st) if st.available else []

    def adopt(self, conv: Conversation) -> None:
        """Take over a conversation restored from shared storage, with its agent's claim
        already held there (no claim is made again)."""
        self.conversations[conv.id] = conv
        st = self.agents.get(conv.agent_id or "")
        if conv.state in ("assigned", "reserved") and st is not None:
            st.load += 1
            st.conversations[conv.id] = None
            self._touch(st)
            if conv.state == "reserved" and conv.reserved_until is not None:
                heapq.heappush(self._timers, (conv.reserved_until, next(self._timer_seq), "reserve", conv.id, _stamp(conv)))
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
            heapq.heappush(self._timers, (conv.reserved_until, next(self._timer_seq), "reserve", conv.id, _stamp(conv)))
        else:
            conv.state = "assigned"
        st.load += 1
        st.assigned += 1
        st.last_seq = next(self._seq)
        st.conversations[conv.id] = None
        self._touch(st)

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
            self._touch(st)
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
        policy = self._policy[conv.shop_id]
        queues = self._queues
        rule = self._deadline.get(conv.shop_id)
        if rule is None:
            key = -(conv.priority - policy.aging_per_minute * conv.queued_at / 60.0)
        else:
            key, counts = rule.deadline(conv)
            if not counts or key < now + rule.margin:
                queues = self._late
        targets = self.targets(conv)
        idx = min(conv.target, len(targets) - 1)
        skills, timeout = targets[idx]
        for skill in skills:
            heapq.heappush(queues.setdefault((conv.shop_id, skill), []), (key, conv.seq, conv.version, conv.id))
        if timeout is not None and idx + 1 < len(targets):
            heapq.heappush(self._timers, (conv.target_since + timeout, next(self._timer_seq), "expand", conv.id, _stamp(conv)))

    def _expand(self, conv: Conversation) -> list[Decision]:
        targets = self.targets(conv)
        if conv.target + 1 >= len(targets):
            return []
        conv.target += 1
        conv.target_since = self.now or conv.target_since
        conv.history.append({"event": "expansion", "target": conv.target, "ts": self.now})
        action, agent, _ = self._try_targets(conv, exclude=None)
        return [self._decision(conv, action, agent, "expansion")] if action != "queued" else []

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
        return self._decision(conv, action, agent, cause)

    def _queue_top(self, key: tuple[str, str]) -> tuple[float, int, int, str] | None:
        q = self._queues.get(key)
        while q:
            entry = q[0]
            conv = self.conversations.get(entry[3])
            if conv is not None and conv.version == entry[2] and conv.state == "queued":
                return entry
            heapq.heappop(q)
        return None

    def _valid_top(self, q: list[tuple[float, int, int, str]] | None) -> tuple[float, int, int, str] | None:
        conversations = self.conversations
        while q:
            entry = q[0]
            conv = conversations.get(entry[3])
            if conv is not None and conv.version == entry[2] and conv.state == "queued":
                return entry
            heapq.heappop(q)
        return None

    def _deadline_best(self, key: tuple[str, str], rule: _DeadlineRule) -> tuple[int, float, int, str] | None:
        """The queue's next conversation under the deadline discipline, as ``(class, deadline,
        seq, id)``: class 0 starving (``starve_after_s`` past its deadline), 1 still in time
        (``reply_margin_s`` or more before it), 2 late. Conversations whose deadline is nearer
        than the margin move to the late heap (once each)."""
        now = self.now or 0.0
        live = self._queues.get(key)
        late = self._late.get(key)
        while (entry := self._valid_top(live)) is not None and entry[0] < now + rule.margin:
            heapq.heappop(live)  # type: ignore[arg-type]
            if late is None:
                late = self._late[key] = []
            heapq.heappush(late, entry)
        lentry = self._valid_top(late)
        if lentry is not None and now - lentry[0] > rule.starve_after_s:
            return (0, lentry[0], lentry[1], lentry[3])
        if entry is not None:
            return (1, entry[0], entry[1], entry[3])
        if lentry is not None:
            return (2, lentry[0], lentry[1], lentry[3])
        return None

    def _queue_best(self, key: tuple[str, str]) -> tuple[int, float, int, str] | None:
        """The queue's next conversation as a rank comparable across queues: ``(class, value,
        seq, id)``; under the priority discipline class 1 and value −effective priority."""
        rule = self._deadline.get(key[0])
        if rule is not None:
            return self._deadline_best(key, rule)
        entry = self._queue_top(key)
        if entry is None:
            return None
        return (1, -self._effective(self.conversations[entry[3]]), entry[1], entry[3])

    def _effective(self, conv: Conversation) -> float:
        aging = self._policy[conv.shop_id].aging_per_minute
        return conv.priority + aging * ((self.now or 0) - (conv.queued_at or 0)) / 60.0

    def _drain_agent(self, st: AgentState, exclude_conv: str | None = None) -> list[Decision]:
        """Give the agent waiting conversations while it has room, highest effective priority
        first (arrival breaks ties)."""
        decisions: list[Decision] = []
        keys = self._agent_queue_keys.get(st.id, ())
        queues = self._queues
        late = self._late
        deadline = self._deadline
        shop_open = self._shop_open
        while st.available and st.id not in self._refused:
            best: tuple[Any, ...] | None = None
            for key in keys:
                # most queues are empty
                if not (queues.get(key) or late.get(key)) or not shop_open.get(key[0], True):
                    continue
                if key[0] in deadline:
                    cand = self._deadline_best(key, deadline[key[0]])
                    if cand is None or cand[3] == exclude_conv:
                        continue
                else:
                    entry = self._queue_top(key)
                    if entry is None:
                        continue
                    conv = self.conversations[entry[3]]
                    if conv.id == exclude_conv:
                        continue
                    cand = (1, -self._effective(conv), conv.seq, conv.id)
                if best is None or cand[:3] < best[:3]:
                    best = cand
            if best is None:
                break
            conv = self.conversations[best[3]]
            if not self._claimed(conv, st):
                break
            self._assign(conv, st)
            decisions.append(self._decision(conv, conv.state, st.id, "queue_drain"))
        return decisions

    def _drain_shop(self, shop_id: str) -> list[Decision]:
        decisions: list[Decision] = []
        for sid, _skill in sorted({*self._queues, *self._late}):
            if sid != shop_id:
                continue
            while (entry := self._queue_best((sid, _skill))) is not None:
                conv = self.conversations[entry[3]]
                skills, _ = self.targets(conv)[min(conv.target, len(self.targets(conv)) - 1)]
                st = self._pick(sid, skills)
                if st is None:
                    break
                if not self._claimed(conv, st):
                    continue
                self._assign(conv, st)
                decisions.append(self._decision(conv, conv.state, st.id, "queue_drain"))
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
            self.last_agent[conv.id] = (agent, self.now or conv.last_ts)
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
        conv = self.conversations.get(conversation_id)
        if conv is None:
            raise DispatchError(i18n._("no open conversation {cid!r}", cid=conversation_id))
        old = conv.agent_id
        if to_agent is not None:
            st = self.agents.get(to_agent)
            if st is None:
                raise DispatchError(i18n._("unknown agent {agent!r}", agent=to_agent))
            if to_agent == old:
                raise DispatchError(i18n._("conversation {cid!r} is already with {agent!r}", cid=conversation_id, agent=to_agent))
            if conv.shop_id not in self._agent_shops.get(to_agent, ()):
                raise DispatchError(i18n._("agent {agent!r} may not serve shop {shop!r}", agent=to_agent, shop=conv.shop_id))
            if st.status != "online" or not st.in_shift:
                raise DispatchError(i18n._("agent {agent!r} is not online", agent=to_agent))
            if st.load >= st.max_concurrent:
                raise DispatchError(i18n._("agent {agent!r} is at capacity ({n})", agent=to_agent, n=st.max_concurrent))
            self._release(conv)
            if self._claimed(conv, st):
                reservations, self.reservations = self.reservations, False
                self._assign(conv, st)
                self.reservations = reservations
                decisions = [self._decision(conv, "assigned", st.id, "transfer")]
            else:
                decisions = [self._route_again(conv, "transfer", exclude=old)]
        else:
            assert to_skill is not None
            if not any(skill == to_skill for (_, skill) in self._pools):
                raise DispatchError(i18n._("no agent has skill {skill!r}", skill=to_skill))
            self._release(conv)
            conv.skill = to_skill
            conv.queued_at = None
            decisions = [self._route_again(conv, "transfer", exclude=old)]
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

    def _decision(self, conv: Conversation, action: str, agent_id: str | None, cause: str) -> Decision:
        return Decision(
            msg_id=None, shop_id=conv.shop_id, conversation_id=conv.id, action=action if action != "reserved" else "assigned",  # type: ignore[arg-type]
            agent_id=agent_id, skill=conv.skill, priority=conv.priority, cause=cause,  # type: ignore[arg-type]
        )

    # -- introspection (invariant checks, stats, the workbench) ---------------------------------

    def queued(self) -> list[Conversation]:
        return [c for c in self.conversations.values() if c.state == "queued"]

    def check_invariants(self) -> None:
        """Raise AssertionError if the state breaks a routing invariant (used by tests)."""
        owners: dict[str, str] = {}
        for st in self.agents.values():
            assert st.load == len(st.conversations), f"{st.id}: load {st.load} != {len(st.conversations)}"
            assert st.load <= st.max_concurrent, f"{st.id} over capacity"
            assert st.shared_load >= 0, f"{st.id}: shared load {st.shared_load}"
            for cid in st.conversations:
                assert cid not in owners, f"{cid} held by {owners.get(cid)} and {st.id}"
                owners[cid] = st.id
                assert self.conversations[cid].agent_id == st.id
        for conv in self.conversations.values():
            if conv.agent_id is not None:
                assert owners.get(conv.id) == conv.agent_id, f"{conv.id} agent mismatch"
            if conv.state == "queued":
                skills, _ = self.targets(conv)[min(conv.target, len(self.targets(conv)) - 1)]
                assert self._pick(conv.shop_id, skills) is None, f"{conv.id} queued while an agent has room"
