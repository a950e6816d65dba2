"""``fenliu simulate``: what a policy would do to waits, reply rates and agents, before it goes live.

A discrete-event simulation on a virtual clock. Buyers (synthetic, from a scenario, or recorded
JSONL as ``route`` takes) send messages; the real :class:`router.core.pipeline.Router` routes them
(plugins, dispatch, timers), and simulated agents accept, reply and close after drawn delays,
which frees capacity and drains queues through the real dispatcher. There is no second
implementation of routing here: the simulator only plays buyers and agents and measures.

The clock jumps from event to event: the next buyer message, the next agent or buyer action, or
the dispatcher's next timer (expansion, shift, business hours, reservation), whichever is first,
so a decision made by a timer is stamped with the timer's own time.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from router.core import i18n
from router.core.config import Config, ConfigError, ConfigErrors, load_config
from router.tools.scenario import (
    NEEDED_SKILL,
    ConvSpec,
    Draws,
    Scenario,
    classify_need,
    daily_windows,
    generate,
    in_windows,
    load_scenario,
)

INF = math.inf
# conversation actions, then agent actions (``_RELEASE`` runs after the buyer side is over)
_MSG, _ACCEPT, _REPLY, _CLOSE, _LEAVE, _IDLE, _TRANSFER, _HANDOFF, _RELEASE, _BREAK, _BACK = range(11)
_VERSIONED = frozenset((_ACCEPT, _REPLY, _CLOSE, _TRANSFER))
_A_SPEC, _A_EVENT = range(2)
REROUTE_CAUSES = ("agent_offline", "reservation_timeout", "transfer")
WAIT_EDGES = tuple(range(0, 615, 15))
TRANSFER_DELAY_S = 30.0


class _Conv:
    """The simulator's view of one conversation as the buyer lives it (the router keeps its own)."""

    __slots__ = ("cid", "spec", "t0", "need_at", "agent", "ver", "qskill", "skill", "replied",
                 "closed", "patience", "handle_u", "transfer_u", "acw_u", "draws", "nmsg", "answered",
                 "transferred", "leave_at", "leave_set", "need", "last_t", "mode", "group", "left")

    def __init__(self, cid: str, spec: ConvSpec, draws: Draws, patience: float, group: tuple[str, bool]) -> None:
        self.cid = cid
        self.spec = spec
        self.t0 = spec.times[0]
        self.last_t = spec.times[-1]
        self.need = spec.category
        self.draws = draws
        self.need_at: float | None = None
        self.agent: str | None = None
        self.ver = 0
        self.qskill: str | None = None
        self.skill: str | None = None
        self.replied: float | None = None
        self.closed = False
        self.patience = patience
        self.handle_u = draws.u()
        self.transfer_u = draws.u()
        self.acw_u = draws.u()
        self.nmsg = 0
        self.answered = 0
        self.transferred = False
        self.leave_at = INF
        self.leave_set = False
        self.mode = ""  # "suggest" / "answer_and_handoff" once the bot handed the chat on
        self.group = group  # (platform, vip)
        self.left: float | None = None


class Traffic(msgspec.Struct, frozen=True):
    """What the buyers do, shared by every policy of a run: conversations (synthetic, or recorded
    messages cut into conversations), recorded agent events (``(ts, order, item)``), and the
    horizon ``[start, end]``."""

    start: float
    end: float
    source: str
    conversations: list[ConvSpec] = []
    recorded: list[tuple[float, int, Any]] = []
    synthetic: bool = True


class Simulation:
    """One policy's run over the shared traffic."""

    def __init__(self, config: Config, scenario: Scenario, traffic: Traffic, seed: int,
                 label: str = "", progress: Callable[[float], None] | None = None) -> None:
        self.config = config
        self.s = scenario
        self.seed = seed
        self.traffic = traffic
        self.label = label or config.dir.name
        self.progress = progress
        # Future actions: a heap of their distinct times, and per time the actions in the order
        # they were scheduled (the same order as a heap of ``(time, sequence, …)`` tuples, with
        # comparisons of plain floats instead of tuples).
        self.times: list[float] = []
        self.due: dict[float, list[tuple[int, Any, int]]] = {}
        self.live: dict[str, _Conv] = {}
        a = scenario.agents
        self.reservations = a.reservations
        self.accept_q = a.accept_s.quantile
        self.reply_q = a.first_reply_s.quantile
        self.acw_q = a.after_chat_s.quantile
        self.reply_k = a.load.reply_per_chat
        self.handle_k = a.load.handle_per_chat
        self.speed = dict(a.speed)
        self.transfer_share = a.transfer_share
        self.bot_close = scenario.buyers.bot_close_after_s
        self.patience_q = scenario.buyers.patience_s.quantile
        self.vip_tags = frozenset(scenario.buyers.vip_tags)
        self.send_q = scenario.bot.suggest_send_s.quantile
        self.suggest_q = scenario.bot.suggest_handle_s.quantile
        self.bot_mode = {sid: scenario.bot.mode(shop.platform) for sid, shop in config.shops.items()}
        self.platform = {sid: shop.platform for sid, shop in config.shops.items()}
        self.handle: dict[str, Any] = {}
        self.skills = sorted({s for ag in config.agents.values() for s in ag.skills})
        self.agent_skills = {aid: frozenset(ag.skills) for aid, ag in config.agents.items()}
        self.tally: dict[str, list[float]] = {aid: [0, traffic.start, 0.0, 0, 0] for aid in sorted(config.agents)}
        self.messages = 0
        self.bad_inputs = 0
        self.dropped_messages = 0
        self.ignored_events = 0
        self.handoffs = {"suggest": 0, "answer_and_handoff": 0}
        self.need_transfers = 0
        self.breaks = 0
        self.actions: dict[str, int] = {}
        self.causes: dict[str, int] = {}
        self.outcomes = {"human": 0, "abandoned": 0, "bot": 0, "blocked": 0, "unfinished": 0}
        self.waits: list[float] = []
        self.waits_all: list[float] = []
        self.waits_window: list[float] = []
        self.hours: dict[tuple[int, str], list[int]] = {}  # (hour from start, need) → counts
        self.groups: dict[tuple[str, bool], list[Any]] = {}
        self.eligible = 0
        self.in_time = 0
        self.depth: dict[str, int] = {}
        self.series: dict[str, list[int]] = {}
        self.bucket = scenario.metrics.bucket_s
        m = scenario.metrics
        defaults = config.main.defaults
        self.target = m.reply_target_s or defaults.reply_within_s
        self.window = (m.window_start or defaults.reply_window[0], m.window_end or defaults.reply_window[1])
        self.windows = daily_windows(scenario, *self.window, traffic.start, traffic.end)
        self.window_starts = [w[0] for w in self.windows]
        self.now = traffic.start
        self.steps = 0
        self.router: Any = None

    # -- scheduling helpers ------------------------------------------------------------------------

    def _push(self, t: float, kind: int, conv: Any, ver: int) -> None:
        bucket = self.due.get(t)
        if bucket is None:
            self.due[t] = [(kind, conv, ver)]
            heapq.heappush(self.times, t)
        else:
            bucket.append((kind, conv, ver))

    def _load(self, aid: str | None) -> int:
        """The agent's open chats in the router (this one included): what slows them down."""
        st = self.router.dispatcher.agents.get(aid) if aid is not None else None
        return max(1, st.load) if st is not None else 1

    def _handle_time(self, conv: _Conv, n: int) -> float:
        if conv.mode == "suggest":
            base = self.suggest_q(conv.handle_u)
        else:
            q = self.handle.get(conv.need)
            if q is None:
                q = self.handle[conv.need] = self.s.handle_dist(conv.need).quantile
            base = q(conv.handle_u)
        return base * self.speed.get(conv.agent, 1.0) * (1.0 + self.handle_k * (n - 1))  # type: ignore[arg-type]

    def _set_depth(self, skill: str, delta: int, now: float) -> None:
        b = int((now - self.traffic.start) // self.bucket)
        cur = self.depth.get(skill, 0)
        ser = self.series.get(skill)
        if ser is None:
            ser = self.series[skill] = []
        while len(ser) <= b:
            ser.append(cur)
        new = cur + delta
        self.depth[skill] = new
        if new > ser[b]:
            ser[b] = new

    def _tally(self, aid: str, delta: int, now: float) -> list[float] | None:
        t = self.tally.get(aid)
        if t is not None:
            t[2] += t[0] * (now - t[1])
            t[1] = now
            t[0] += delta
        return t

    # -- what decisions mean for buyers and agents ------------------------------------------------

    def _apply(self, decisions: list[Any], now: float) -> None:
        live = self.live
        for dec in decisions:
            cause = dec.cause
            if cause != "message":
                self.causes[cause] = self.causes.get(cause, 0) + 1
            else:
                self.actions[dec.action] = self.actions.get(dec.action, 0) + 1
            conv = live.get(dec.conversation_id)
            if conv is None:
                continue
            action = dec.action
            if dec.flags and not conv.mode and conv.replied is None:
                for f in dec.flags:
                    if f.startswith("bot:suggest:"):  # the FAQ answer waits in the agent's composer
                        conv.mode = "suggest"
            if action == "assigned":
                if dec.agent_id != conv.agent:
                    self._assign(conv, dec.agent_id, dec.skill, now)
            elif action == "queued":
                if conv.agent is not None:
                    self._unassign(conv, now)
                    conv.ver += 1
                if conv.need_at is None:
                    self._need(conv, now)
                self._leave(conv)
                skill = dec.skill
                conv.skill = skill
                if conv.qskill != skill:
                    if conv.qskill is not None:
                        self._set_depth(conv.qskill, -1, now)
                    self._set_depth(skill, 1, now)
                    conv.qskill = skill
            elif action == "answered":
                conv.answered += 1
                if conv.answered == 1 and conv.need_at is None:
                    mode = self.bot_mode[conv.spec.shop_id]
                    if mode != "settle":
                        # the bot's answer goes to an agent (suggest) or out, and a human follows
                        conv.mode = mode
                        self._push(now, _HANDOFF, conv, 0)

    def _need(self, conv: _Conv, now: float) -> None:
        """The buyer now waits for a human: from their first message, or from now if the bot kept
        them longer than their patience."""
        conv.need_at = now
        leave = conv.t0 + conv.patience
        conv.leave_at = leave if leave > now else now + conv.patience

    def _leave(self, conv: _Conv) -> None:
        """Schedule the buyer's departure only once they could actually run out of patience
        (queued, or the agent would answer too late): most never do, which saves an event."""
        if not conv.leave_set and conv.replied is None:
            conv.leave_set = True
            self._push(conv.leave_at, _LEAVE, conv, 0)

    def _assign(self, conv: _Conv, aid: str, skill: str | None, now: float) -> None:
        if conv.agent is not None:
            self._unassign(conv, now)
        if conv.qskill is not None:
            self._set_depth(conv.qskill, -1, now)
            conv.qskill = None
        if conv.need_at is None:
            self._need(conv, now)
        conv.agent = aid
        conv.skill = skill
        conv.ver += 1
        t = self._tally(aid, 1, now)
        if t is not None:
            t[3] += 1
        if self.reservations:
            at = now + self.accept_q(conv.draws.u())
            if at >= conv.leave_at:
                self._leave(conv)
            self._push(at, _ACCEPT, conv, conv.ver)
        else:
            self._accepted(conv, now)

    def _unassign(self, conv: _Conv, now: float) -> None:
        self._tally(conv.agent, -1, now)  # type: ignore[arg-type]
        conv.agent = None

    def _accepted(self, conv: _Conv, now: float) -> None:
        """The agent opens the chat: first reply and handle time, slower the more chats they
        have open; the chat cannot close before the buyer's last message has been answered."""
        n = self._load(conv.agent)
        u_reply = conv.draws.u()
        busy = 0.0
        if conv.replied is None:
            if conv.mode == "suggest":
                busy = self.send_q(u_reply) * (1.0 + self.reply_k * (n - 1))
            else:
                busy = self.reply_q(u_reply) * (1.0 + self.reply_k * (n - 1))
            if now + busy >= conv.leave_at:
                self._leave(conv)
            self._push(now + busy, _REPLY, conv, conv.ver)
        close = now + max(self._handle_time(conv, n), busy + 1.0)
        # the agent answers the buyer's last message before closing, however quick the work was
        last = conv.last_t + self.reply_q(u_reply) * (1.0 + self.reply_k * (n - 1)) + 1.0
        self._push(close if close > last else last, _CLOSE, conv, conv.ver)

    def _finish(self, conv: _Conv, now: float, outcome: str, keep_agent: bool = False) -> None:
        conv.closed = True
        if conv.agent is not None and not keep_agent:
            self._unassign(conv, now)
        if conv.qskill is not None:
            self._set_depth(conv.qskill, -1, now)
            conv.qskill = None
        if self.live.get(conv.cid) is conv:
            del self.live[conv.cid]
        if outcome == "abandoned":
            conv.left = now
        self._record(conv, outcome)

    def _record(self, conv: _Conv, outcome: str) -> None:
        self.outcomes[outcome] += 1
        hk = (int((conv.t0 - self.traffic.start) // 3600), conv.need)
        h = self.hours.get(hk)
        if h is None:
            h = self.hours[hk] = [0, 0, 0, 0]  # conversations, eligible, in time, abandoned
        h[0] += 1
        if outcome == "abandoned":
            h[3] += 1
        g = self.groups.get(conv.group)
        if g is None:
            # conversations, eligible, in time, abandoned, waits
            g = self.groups[conv.group] = [0, 0, 0, 0, []]
        g[0] += 1
        if outcome == "blocked":
            return
        if outcome == "abandoned":
            g[3] += 1
        if conv.replied is not None:
            w = conv.replied - conv.t0
            self.waits.append(w)
            self.waits_all.append(w)
            g[4].append(w)
        elif conv.left is not None:
            self.waits_all.append(conv.left - conv.t0)
        if in_windows(self.windows, self.window_starts, conv.t0):
            self.eligible += 1
            g[1] += 1
            if conv.replied is not None:
                self.waits_window.append(conv.replied - conv.t0)
            h[1] += 1
            if conv.replied is not None and conv.replied - conv.t0 <= self.target:
                self.in_time += 1
                g[2] += 1
                h[2] += 1

    def _needed_skill(self, conv: _Conv) -> str | None:
        skill = NEEDED_SKILL.get(conv.need)
        return skill if skill in self.skills else None

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Simulate to the end and return the figures. The start-up heap is frozen and full
        collections deferred meanwhile: a run allocates millions of short-lived objects and
        full collections of the growing heap otherwise cost a third of the time."""
        thresholds = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
        # Plugins' wall-clock budgets have no meaning on a virtual clock: the same seed must
        # give the same figures however busy the machine is.
        try:
            with self.config.plugins.without_budget():
                return await self._run()
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()

    def _schedule_breaks(self) -> dict[str, Draws]:
        b = self.s.agents.breaks
        if not b.enabled:
            return {}
        out = {}
        for aid in sorted(self.config.agents):
            draws = out[aid] = Draws(self.seed, f"agent:{aid}")
            self._push(self.traffic.start + b.every_s.quantile(draws.u()), _BREAK, aid, 0)
        return out

    async def _run(self) -> dict[str, Any]:
        from router.core.models import AcceptEvent, AgentStatusEvent, CloseEvent, Message, TransferEvent
        from router.core.pipeline import InputError, Router

        # Synthetic traffic has unique message ids; recorded traffic may repeat some, as life does.
        router = self.router = Router(self.config, reservations=self.reservations, dedupe=not self.traffic.synthetic)
        d = router.dispatcher
        await router.advance(self.traffic.start)
        handle_message = router.handle_message
        handle_event = router.handle_event
        apply = self._apply
        times = self.times
        due = self.due
        heappop = heapq.heappop
        live = self.live
        push = self._push
        seed = self.seed
        patience_q = self.patience_q
        vip_tags = self.vip_tags
        platform = self.platform
        arrivals: list[tuple[float, int, Any]] = [(c.times[0], _A_SPEC, c) for c in self.traffic.conversations]
        if self.traffic.recorded:
            arrivals.extend((t, _A_EVENT, item) for t, _, item in self.traffic.recorded)
            arrivals.sort(key=lambda x: (x[0], x[1]))
        n = len(arrivals)
        i = 0
        steps = 0
        progress = self.progress
        breaks = self._schedule_breaks()
        brk = self.s.agents.breaks

        releasing = 0
        bot_close = self.bot_close
        timers = d._timers  # the dispatcher's timer heap: its head is due no later than next_due()
        messages = 0

        async def close(conv: _Conv, now: float) -> list[Any]:
            try:
                return await handle_event(CloseEvent(conv.cid, now))
            except InputError:
                return []

        async def transfer(conv: _Conv, to: str, now: float) -> None:
            try:
                apply(await handle_event(TransferEvent(conv.cid, to_skill=to, ts=now)), now)
            except InputError:
                self.bad_inputs += 1

        while True:
            # Drop the head's actions that can no longer do anything (a buyer's leave timer once
            # a human replied, an agent's step on a chat that moved on) without moving the clock
            # to them: a patience of days must not stretch the run to days.
            while times:
                th = times[0]
                bucket = due[th]
                kind, conv, ver = bucket[0]
                if kind < _RELEASE and (
                        conv.closed
                        or (kind in _VERSIONED and ver != conv.ver)
                        or (kind == _LEAVE and conv.replied is not None)
                        or (kind == _IDLE and (ver != conv.nmsg or conv.need_at is not None))):
                    if len(bucket) == 1:
                        del due[th]
                        heappop(times)
                    else:
                        bucket.pop(0)
                    continue
                if kind >= _BREAK and not live and i >= n and not releasing:
                    # only agents' breaks are left: the day is over
                    times.clear()
                    due.clear()
                break
            ta = arrivals[i][0] if i < n else INF
            th = times[0] if times else INF
            t = ta if ta < th else th
            if t == INF:
                break
            if timers and timers[0][0] <= t:
                tt = d.next_due()  # drops timers that would do nothing
                if tt is not None and tt <= t:
                    if d.now is not None and tt < d.now:
                        tt = d.now
                    moved = await router.advance(tt)
                    if moved:
                        apply(moved, tt)
                    continue
            self.now = t
            steps += 1
            if progress is not None and not steps & 4095:
                progress(t)
            if th <= ta:
                bucket = due[th]
                if len(bucket) == 1:
                    del due[th]
                    heappop(times)
                    kind, conv, ver = bucket[0]
                else:
                    kind, conv, ver = bucket.pop(0)
                if kind == _MSG:
                    spec = conv.spec
                    k = conv.nmsg
                    msg = spec.recorded[k] if spec.recorded else Message(
                        spec.shop_id, f"sm-{spec.index}-{k}", spec.buyer_id, spec.texts[k], "text", t,
                        spec.buyer, spec.order)
                elif kind == _ACCEPT:
                    try:
                        await handle_event(AcceptEvent(conv.cid, conv.agent, t))  # type: ignore[arg-type]
                    except InputError:
                        continue
                    self._accepted(conv, t)
                    continue
                elif kind == _REPLY:
                    conv.replied = t
                    if not conv.transferred:
                        need = self._needed_skill(conv)
                        lacks = need is not None and need not in self.agent_skills.get(conv.agent, ())  # type: ignore[arg-type]
                        if lacks or conv.transfer_u < self.transfer_share:
                            push(t + TRANSFER_DELAY_S, _TRANSFER, conv, ver)
                    continue
                elif kind == _CLOSE:
                    t_agent = self.tally.get(conv.agent)  # type: ignore[arg-type]
                    if t_agent is not None:
                        t_agent[4] += 1
                    self._finish(conv, t, "human", keep_agent=True)
                    # after-chat work: the slot stays taken until the agent is done with it
                    push(t + self.acw_q(conv.acw_u), _RELEASE, conv, 0)
                    releasing += 1
                    continue
                elif kind == _RELEASE:
                    releasing -= 1
                    if conv.agent is not None:
                        self._unassign(conv, t)
                    apply(await close(conv, t), t)
                    continue
                elif kind == _LEAVE:
                    moved = await close(conv, t)
                    self._finish(conv, t, "abandoned")
                    apply(moved, t)
                    continue
                elif kind == _IDLE:
                    moved = await close(conv, t) if conv.cid in d.conversations else []
                    self._finish(conv, t, "bot" if conv.answered else "blocked")
                    apply(moved, t)
                    continue
                elif kind == _TRANSFER:
                    conv.transferred = True
                    need = self._needed_skill(conv) or conv.skill
                    if need is not None:
                        self.need_transfers += 1
                        await transfer(conv, need, t)
                    continue
                elif kind == _HANDOFF:
                    if conv.need_at is None and conv.skill is not None:
                        self.handoffs[conv.mode] += 1
                        await transfer(conv, conv.skill, t)
                    continue
                elif kind == _BREAK:
                    st = d.agents.get(conv)
                    if st is not None and st.status == "online" and st.in_shift:
                        self.breaks += 1
                        apply(await handle_event(AgentStatusEvent(conv, "break", t)), t)
                        push(t + brk.length_s.quantile(breaks[conv].u()), _BACK, conv, 0)
                    else:
                        push(t + brk.every_s.quantile(breaks[conv].u()), _BREAK, conv, 0)
                    continue
                else:  # _BACK
                    st = d.agents.get(conv)
                    if st is not None and st.status == "break":
                        apply(await handle_event(AgentStatusEvent(conv, "online", t)), t)
                    push(t + brk.every_s.quantile(breaks[conv].u()), _BREAK, conv, 0)
                    continue
            else:
                kind, item = arrivals[i][1], arrivals[i][2]
                i += 1
                if kind == _A_EVENT:
                    try:
                        apply(await handle_event(item), t)
                    except InputError:
                        self.bad_inputs += 1
                    continue
                spec = item
                draws = Draws(seed, spec.key)
                buyer = spec.buyer
                vip = buyer is not None and not vip_tags.isdisjoint(buyer.tags)
                conv = _Conv(f"{spec.shop_id}:{spec.buyer_id}", spec, draws, patience_q(draws.u()),
                             (platform.get(spec.shop_id, "other"), vip))
                old = live.get(conv.cid)
                if old is not None:  # the same buyer again while the last chat was still open
                    moved = await close(old, t)
                    self._finish(old, t, "human" if old.replied is not None else
                                 "abandoned" if old.need_at is not None else "bot" if old.answered else "blocked")
                    apply(moved, t)
                live[conv.cid] = conv
                msg = spec.recorded[0] if spec.recorded else Message(
                    spec.shop_id, f"sm-{spec.index}-0", spec.buyer_id, spec.texts[0], "text", t, spec.buyer, spec.order)
            # a buyer message: route it, then schedule the buyer's next one
            k = conv.nmsg = conv.nmsg + 1
            try:
                decisions = await handle_message(msg)
            except InputError:
                self.bad_inputs += 1
            else:
                messages += 1
                apply(decisions, t)
            times_ = conv.spec.times
            if conv.closed:
                self.dropped_messages += len(times_) - k
            elif k < len(times_):
                push(times_[k], _MSG, conv, 0)
            elif conv.need_at is None:
                # the buyer's last message and no human needed: the chat ends when they go quiet
                push(t + bot_close, _IDLE, conv, k)
        self.messages = messages
        self.steps = steps
        for conv in list(live.values()):
            self._finish(conv, self.now, "unfinished")
        if progress is not None:
            progress(self.now)
        return self.figures()

    # -- figures -------------------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        end = max(self.now, self.traffic.end)
        nb = max(1, math.ceil((end - self.traffic.start) / self.bucket))
        for skill in self.series:
            self._set_depth(skill, 0, self.traffic.start + (nb - 1) * self.bucket)
        for aid in self.tally:
            self._tally(aid, 0, end)
        agents = {}
        for aid, (_, _, area, assignments, handled) in self.tally.items():
            acfg = self.config.agents[aid]
            on = shift_seconds(acfg.shift, self.traffic.start, end)
            util = area / (acfg.max_concurrent * on) if on > 0 else 0.0
            agents[aid] = {"assignments": int(assignments), "handled": int(handled),
                           "shift_h": _r(on / 3600), "utilisation": _r(util)}
        active = [a for a, v in agents.items() if v["shift_h"] > 0]
        handled = [agents[a]["handled"] for a in active]
        utils = [agents[a]["utilisation"] for a in active]
        # agents on different shifts handle different numbers of chats by design: the fairness
        # of a policy shows among agents who worked the same hours
        shifts: dict[str, list[str]] = {}
        for a in active:
            shifts.setdefault(shift_label(self.config.agents[a].schedule), []).append(a)
        by_shift = {
            label: {"agents": len(ids), "handled_gini": _r(gini([agents[a]["handled"] for a in ids])),
                    "utilisation_gini": _r(gini([agents[a]["utilisation"] for a in ids]))}
            for label, ids in sorted(shifts.items())
        }
        weight = sum(v["agents"] for v in by_shift.values()) or 1
        waits = sorted(self.waits)
        total = sum(self.outcomes.values())
        hist = [0] * len(WAIT_EDGES)
        for w in waits:
            hist[min(int(w // 15), len(WAIT_EDGES) - 1)] += 1
        reroutes = {c: self.causes.get(c, 0) for c in REROUTE_CAUSES}
        return {
            "policy": self.label,
            "config": str(self.config.dir),
            "strategies": {name: p.dispatch.strategy for name, p in sorted(self.config.policies.items())},
            "messages": self.messages,
            "bad_inputs": self.bad_inputs,
            "conversations": total,
            "actions": dict(sorted(self.actions.items())),
            "outcomes": self.outcomes,
            "abandoned": self.outcomes["abandoned"],
            "abandoned_share": _r(self.outcomes["abandoned"] / total if total else 0.0),
            "wait_s": {
                "count": len(waits),
                "mean": _r(sum(waits) / len(waits)) if waits else None,
                "p50": _r(percentile(waits, 50)),
                "p90": _r(percentile(waits, 90)),
                "p99": _r(percentile(waits, 99)),
                "max": _r(waits[-1]) if waits else None,
            },
            "wait_all_s": wait_summary(self.waits_all),
            "wait_window_s": wait_summary(self.waits_window),
            "wait_histogram": {"bin_s": 15, "edges": list(WAIT_EDGES), "counts": hist},
            "groups": self._group_figures(),
            "by_hour": {f"{hr}:{need}": v for (hr, need), v in sorted(self.hours.items())},
            "bot_handoffs": dict(self.handoffs),
            "need_transfers": self.need_transfers,
            "breaks": self.breaks,
            "dropped_messages": self.dropped_messages,
            "reply_rate": {
                "target_s": self.target,
                "window": "-".join(self.window),
                "eligible": self.eligible,
                "replied_in_time": self.in_time,
                "rate": _r(self.in_time / self.eligible) if self.eligible else None,
            },
            "causes": dict(sorted(self.causes.items())),
            "expansions": self.causes.get("expansion", 0),
            "reroutes": reroutes,
            "queue": {
                "bucket_s": self.bucket,
                "start": self.traffic.start,
                "max": {k: max(v) for k, v in sorted(self.series.items())},
                "series": {k: v[:nb] for k, v in sorted(self.series.items())},
            },
            "agents": agents,
            "load_spread": {
                "handled_max_minus_min": (max(handled) - min(handled)) if handled else 0,
                "handled_gini": _r(gini(handled)),
                "utilisation_mean": _r(sum(utils) / len(utils)) if utils else 0.0,
                "utilisation_max_minus_min": _r(max(utils) - min(utils)) if utils else 0.0,
                "utilisation_gini": _r(gini(utils)),
                "handled_gini_within_shift": _r(sum(v["agents"] * v["handled_gini"] for v in by_shift.values()) / weight),
                "by_shift": by_shift,
            },
        }

    def _group_figures(self) -> dict[str, Any]:
        """Per platform and VIP vs others: conversations, reply rate, abandoned share, waits."""
        out: dict[str, Any] = {}
        merged: dict[str, list[Any]] = {}
        for (plat, vip), g in self.groups.items():
            for key in (f"platform:{plat}", "vip" if vip else "others"):
                m = merged.setdefault(key, [0, 0, 0, 0, []])
                for k in range(4):
                    m[k] += g[k]
                m[4].extend(g[4])
        for key, (convs, eligible, in_time, abandoned, waits) in sorted(merged.items()):
            ws = sorted(waits)
            out[key] = {"conversations": convs, "eligible": eligible, "replied_in_time": in_time,
                        "reply_rate": _r(in_time / eligible) if eligible else None,
                        "abandoned_share": _r(abandoned / convs) if convs else 0.0,
                        "wait_p50": _r(percentile(ws, 50)), "wait_p90": _r(percentile(ws, 90))}
        return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def wait_summary(values: list[float]) -> dict[str, Any]:
    """Waits counting buyers who gave up at the time they left (a lower bound of what they
    would have waited): leaving them out flatters a policy that makes many give up."""
    ws = sorted(values)
    return {"count": len(ws), "mean": _r(sum(ws) / len(ws)) if ws else None, "p50": _r(percentile(ws, 50)),
            "p90": _r(percentile(ws, 90)), "p99": _r(percentile(ws, 99))}


def shift_label(windows: Any) -> str:
    """A readable name of a shift pattern: agents with the same one form a group."""
    if not windows:
        return "always"
    return ", ".join(f"{w.days} {w.start}-{w.end}" for w in windows)


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least ``p`` % of the values at or below it."""
    if not sorted_values:
        return None
    k = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[k - 1]


def gini(values: list[float]) -> float:
    """0 when everyone has the same, towards 1 when one has everything."""
    n = len(values)
    total = sum(values)
    if n == 0 or total <= 0:
        return 0.0
    ordered = sorted(values)
    weighted = sum((i + 1) * v for i, v in enumerate(ordered))
    return 2 * weighted / (n * total) - (n + 1) / n


def shift_seconds(schedule: Any, start: float, end: float) -> float:
    """Seconds of ``[start, end]`` inside a :class:`router.core.schedule.Schedule`."""
    if schedule.always:
        return end - start
    on = 0.0
    t = start
    while t < end:
        nxt = schedule.next_change(t)
        stop = end if nxt is None else min(nxt, end)
        if schedule.is_open(t):
            on += stop - t
        t = stop
    return on


# -- traffic ----------------------------------------------------------------------------------------


def read_traffic(path: Path) -> tuple[list[tuple[float, int, Any]], list[str]]:
    """Recorded JSONL: messages, ``close`` lines (they end a conversation) and
    ``agent_status``/``tick`` events, in time order. ``transfer`` and ``accept`` lines are
    dropped: the simulated agents make those decisions."""
    from router.core.ingest import read_lines
    from router.core.models import AgentStatusEvent, CloseEvent, Message, TickEvent

    items: list[tuple[float, int, Any]] = []
    errors: list[str] = []
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [], [f"{path}: {exc.strerror}"]
    for n, item, reason in read_lines(data.splitlines()):
        if item is None:
            errors.append(i18n._("{path}: line {n}: {reason}", path=path, n=n, reason=reason))
            continue
        if item.ts is None:  # type: ignore[union-attr]
            errors.append(i18n._("{path}: line {n}: {reason}", path=path, n=n, reason=i18n._("ts: needed to simulate")))
            continue
        if isinstance(item, Message | AgentStatusEvent | TickEvent | CloseEvent):
            items.append((item.ts, n, item))  # type: ignore[arg-type]
    items.sort(key=lambda x: (x[0], x[1]))
    return items, errors


def cut_conversations(recorded: list[tuple[float, int, Any]], scenario: Scenario
                      ) -> tuple[list[ConvSpec], list[tuple[float, int, Any]]]:
    """Recorded messages as the conversations the buyers had: a buyer's messages belong to one
    conversation until a recorded ``close`` or a silence longer than ``buyers.session_gap_s``.
    The simulated agents then close a conversation only after its last recorded message, and a
    buyer who left sends nothing more, so no conversation appears that the traffic never had.
    Returns the conversations and the other events (agent status, ticks)."""
    from router.core.models import CloseEvent, Message

    gap = scenario.buyers.session_gap_s
    vip_tags = tuple(scenario.buyers.vip_tags)
    open_: dict[str, list[Any]] = {}
    done: list[list[Any]] = []
    events: list[tuple[float, int, Any]] = []
    for ts, n, item in recorded:
        if isinstance(item, Message):
            cid = item.conversation_id
            cur = open_.get(cid)
            if cur is not None and ts - cur[-1].ts > gap:
                done.append(cur)
                cur = None
            if cur is None:
                cur = open_[cid] = []
            cur.append(item)
        elif isinstance(item, CloseEvent):
            cur = open_.pop(item.conversation_id, None)
            if cur is not None:
                done.append(cur)
        else:
            events.append((ts, n, item))
    done.extend(open_.values())
    done.sort(key=lambda msgs: (msgs[0].ts, msgs[0].shop_id, msgs[0].buyer_id))
    out = []
    for k, msgs in enumerate(done, 1):
        first = msgs[0]
        buyer = next((m.buyer for m in msgs if m.buyer is not None), None)
        order = next((m.order for m in msgs if m.order is not None), None)
        need = classify_need([m.text for m in msgs], order, buyer, vip_tags)
        out.append(ConvSpec(k, first.shop_id, first.buyer_id, need, tuple(m.ts for m in msgs), (),
                            buyer, order, tuple(msgs)))
    return out, events


def build_traffic(scenario: Scenario, config: Config, seed: int, traffic_file: Path | None) -> tuple[Traffic, list[str]]:
    if traffic_file is not None:
        recorded, errors = read_traffic(traffic_file)
        if not recorded:
            return Traffic(0.0, 0.0, str(traffic_file)), errors or [f"{traffic_file}: no messages"]
        convs, events = cut_conversations(recorded, scenario)
        return Traffic(recorded[0][0], recorded[-1][0], str(traffic_file), conversations=convs,
                       recorded=events, synthetic=False), errors
    start = scenario.start_ts
    convs = generate(scenario, config, seed)
    return Traffic(start, start + scenario.duration_h * 3600, f"scenario {scenario.name}", conversations=convs), []


async def simulate(config: Config, scenario: Scenario, traffic: Traffic, seed: int, label: str = "",
                   progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Run one policy (one config) over ``traffic`` and return its figures."""
    return await Simulation(config, scenario, traffic, seed, label, progress).run()


def encode_results(results: dict[str, Any]) -> bytes:
    """Stable JSON: sorted keys, so the same seed gives byte-identical files."""
    return msgspec.json.format(msgspec.json.encode(results, order="sorted"), indent=2) + b"\n"


# -- command line ---------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", type=Path, help=i18n.gettext("scenario TOML (default: built-in defaults)"))
    p.add_argument("--traffic", type=Path, help=i18n.gettext("recorded JSONL to replay instead of synthetic arrivals"))
    p.add_argument("--compare", type=Path, nargs="+", action="extend", default=[], metavar="DIR",
                   help=i18n.gettext("further config folders (policies) to run on the same traffic"))
    p.add_argument("--report", type=Path, metavar="FILE.html", help=i18n.gettext("write a self-contained HTML report"))
    p.add_argument("--json", type=Path, metavar="FILE", help=i18n.gettext("write the figures as JSON ('-' for stdout)"))
    p.add_argument("--seed", type=int, help=i18n.gettext("random seed (default: the scenario's seed)"))
    p.add_argument("--baseline", action="store_true",
                   help=i18n.gettext("add a first column: the first config as plain round-robin (no sticky, aging, expansion; bot settles)"))
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help=i18n.gettext("run seeds seed … seed+N−1 and report means ± standard errors (3-minute rate, p90 wait, abandonment)"))
    p.add_argument("--write-traffic", type=Path, metavar="FILE.jsonl",
                   help=i18n.gettext("write the scenario's buyers as recorded JSONL (messages and a close line per conversation) and exit"))


def baseline_config(config: Config) -> Config:
    """Plain round-robin on the same shops, agents and plugins: no sticky agent, no aging, no
    skill expansion (a chat waits for its own skill), no dedicated agents, the priority queue,
    and the bot settling what it answers. The yardstick the recommended configuration is
    measured against (docs/simulate.md)."""
    from msgspec.structs import replace

    from policies.deadline import QueueSection
    from router.core.config import Target

    policies = {}
    for name, pol in config.policies.items():
        d = pol.dispatch
        changes: dict[str, Any] = {"dispatch": replace(
            d, strategy="round_robin", sticky_hours=0.0, aging_per_minute=0.0, targets=(Target(),),
            skill_targets={}, dedicated=())}
        if hasattr(pol, "queue"):
            changes["queue"] = QueueSection()
        if hasattr(pol, "bot") and hasattr(pol.bot, "platform_modes"):
            changes["bot"] = replace(pol.bot, mode="settle", platform_modes={})
        policies[name] = replace(pol, **changes)
    out = Config(config.dir, config.main, config.shops, config.agents, policies, config.plugins)
    out.label = "plain round-robin"  # type: ignore[attr-defined]
    return out


def seed_table(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Mean and standard error over seeds of the figures a comparison is judged by."""
    def stats(xs: list[float]) -> dict[str, float]:
        n = len(xs)
        mean = sum(xs) / n
        se = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1) / n) if n > 1 else 0.0
        return {"mean": round(mean, 4), "se": round(se, 4)}

    out = {}
    for label, figs in runs.items():
        out[label] = {
            "seeds": len(figs),
            "reply_rate": stats([f["reply_rate"]["rate"] or 0.0 for f in figs]),
            "wait_p90": stats([f["wait_s"]["p90"] or 0.0 for f in figs]),
            "wait_all_p90": stats([f["wait_all_s"]["p90"] or 0.0 for f in figs]),
            "wait_window_p90": stats([f["wait_window_s"]["p90"] or 0.0 for f in figs]),
            "abandoned_share": stats([f["abandoned_share"] for f in figs]),
            "bot_only": stats([f["outcomes"]["bot"] for f in figs]),
        }
    return out


def _labels(dirs: list[Path]) -> list[str]:
    names = [d.resolve().name or str(d) for d in dirs]
    return [str(d) if names.count(n) > 1 else n for d, n in zip(dirs, names)]


def run_command(args: argparse.Namespace) -> int:
    """The ``simulate`` command: exit 0, or 1 with ``file: key.path: reason`` lines."""
    import anyio
    from rich.console import Console

    err = Console(stderr=True)
    dirs = [args.config, *args.compare]
    configs: list[Config] = []
    problems: list[Any] = []
    for d in dirs:
        try:
            configs.append(load_config(d))
        except ConfigErrors as exc:
            problems.extend(exc.errors)
    scenario = None
    if not problems:
        try:
            scenario = load_scenario(args.scenario, configs[0])
            for c in configs[1:]:
                extra = _check_other(args.scenario, scenario, c)
                problems.extend(extra)
        except ConfigErrors as exc:
            problems.extend(exc.errors)
    if problems or scenario is None:
        for line in problems:
            print(i18n.t(line), file=sys.stderr)
        return 1
    seed = scenario.seed if args.seed is None else args.seed
    if args.write_traffic is not None:
        from router.tools.scenario import write_jsonl

        n = write_jsonl(generate(scenario, configs[0], seed), args.write_traffic)
        err.print(i18n.gettext("{n} conversations written to {path}", n=n, path=args.write_traffic))
        return 0
    labels = _labels(dirs)
    if args.baseline:
        configs.insert(0, baseline_config(configs[0]))
        labels.insert(0, "plain round-robin")
    if args.seeds > 1:
        return _run_seeds(args, configs, labels, scenario, seed, err)
    traffic, bad = build_traffic(scenario, configs[0], seed, args.traffic)
    if bad:
        for line in bad:
            print(i18n.t(line), file=sys.stderr)
        return 1
    results = anyio.run(_run_all, configs, scenario, traffic, seed, labels, err)
    doc = {
        "scenario": {"name": scenario.name, "source": traffic.source, "seed": seed,
                     "start": traffic.start, "end": traffic.end, "timezone": scenario.timezone},
        "policies": results,
    }
    from router.tools.report import print_summary, write_html

    to_stdout = args.json is not None and str(args.json) == "-"
    print_summary(doc, err if to_stdout else Console())
    if args.json is not None:
        data = encode_results(doc)
        if to_stdout:
            sys.stdout.buffer.write(data)
        else:
            args.json.write_bytes(data)
    if args.report is not None:
        write_html(doc, args.report)
        err.print(i18n.gettext("report written to {path}", path=args.report))
    return 0


def _run_seeds(args: argparse.Namespace, configs: list[Config], labels: list[str], scenario: Scenario,
               seed: int, err: Any) -> int:
    import anyio
    from rich.console import Console
    from rich.table import Table

    from router.tools.report import policy_label

    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for k in range(args.seeds):
        traffic, bad = build_traffic(scenario, configs[0], seed + k, args.traffic)
        if bad:
            for line in bad:
                print(i18n.t(line), file=sys.stderr)
            return 1
        for config, label in zip(configs, labels):
            err.print(i18n.gettext("seed {seed}: simulating {label}", seed=seed + k, label=policy_label(label)))
            runs[label].append(anyio.run(simulate, config, scenario, traffic, seed + k, label))
    table = seed_table(runs)
    from router.core.i18n import gettext

    out = Table(title=gettext("fenliu simulate · {source} · seeds {first}–{last} (mean ± s.e.)",
                              source=args.traffic or scenario.name, first=seed, last=seed + args.seeds - 1))
    for i, col in enumerate((gettext("policy"), gettext("3-min human reply rate"), gettext("p90 wait to 1st human reply (s)"),
                             gettext("p90 in the window (s)"), gettext("p90 incl. abandoned (s)"), gettext("abandoned"),
                             gettext("bot-only"))):
        out.add_column(col, justify="left" if i == 0 else "right")
    for label, row in table.items():
        def pm(key: str, pct: bool = False, row: dict[str, Any] = row) -> str:
            m, e = row[key]["mean"], row[key]["se"]
            return f"{100 * m:.1f} ± {100 * e:.1f} %" if pct else f"{m:.0f} ± {e:.0f}"
        out.add_row(policy_label(label), pm("reply_rate", True), pm("wait_p90"), pm("wait_window_p90"), pm("wait_all_p90"),
                    pm("abandoned_share", True),
                    pm("bot_only"))
    to_stdout = args.json is not None and str(args.json) == "-"
    (err if to_stdout else Console()).print(out)
    if args.json is not None:
        data = encode_results({"seeds": list(range(seed, seed + args.seeds)), "table": table, "runs": runs})
        if to_stdout:
            sys.stdout.buffer.write(data)
        else:
            args.json.write_bytes(data)
    return 0


def _check_other(file: Path | None, scenario: Scenario, config: Config) -> list[ConfigError]:
    from router.tools.scenario import check_scenario

    return check_scenario(Path(file or "<defaults>"), scenario, config)


async def _run_all(configs: list[Config], scenario: Scenario, traffic: Traffic, seed: int,
                   labels: list[str], err: Any) -> list[dict[str, Any]]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from router.tools.report import policy_label

    span = max(traffic.end - traffic.start, 1.0)
    out = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=err, disable=not err.is_terminal, transient=False) as bar:
        for config, label in zip(configs, labels):
            task = bar.add_task(i18n.gettext("simulating {label}", label=policy_label(label)), total=span)

            def tick(t: float, task: Any = task) -> None:
                bar.update(task, completed=min(t - traffic.start, span))

            out.append(await simulate(config, scenario, traffic, seed, label, tick))
            bar.update(task, completed=span)
    return out
