"""``fenliu simulate``: what a policy would do to waits, reply rates and agents, before it goes live.

A discrete-event simulation on a virtual clock. Buyers (synthetic, from a scenario, or recorded
JSONL as ``route`` takes) send messages; the real :class:`router.core.pipeline.Router` routes them
(plugins, dispatch, timers), and simulated agents accept, reply and close after drawn delays,
which frees capacity and drains queues through the real dispatcher. There is no second
implementation of routing here: the simulator only plays buyers and agents and measures.

The clock jumps from event to event: the next buyer message, the next agent or buyer action, or
the dispatcher's next timer (expansion, shift, business hours, reservation), whichever is first,
so a decision made by a timer is stamped with the timer's own time.

This module is the clock and its loop; the people are in ``simulate_people``, what is measured
in ``simulate_measures``, the traffic in ``simulate_traffic`` and the command in ``simulate_cli``.
"""

from __future__ import annotations

import gc
import heapq
from collections.abc import Callable
from typing import Any

from router.core.config import Config
from router.tools.scenario import Draws, Scenario
from router.tools.simulate_measures import Measures
from router.tools.simulate_people import (
    ACCEPT,
    BACK,
    BREAK,
    CLOSE,
    HANDOFF,
    IDLE,
    INF,
    LEAVE,
    MSG,
    RELEASE,
    REPLY,
    TRANSFER,
    VERSIONED,
    Conv,
    People,
)
from router.tools.simulate_traffic import Traffic

_A_SPEC, _A_EVENT = range(2)


class Agenda:
    """Future actions: a heap of their distinct times, and per time the actions in the order
    they were scheduled (the same order as a heap of ``(time, sequence, …)`` tuples, with
    comparisons of plain floats instead of tuples)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.due: dict[float, list[tuple[int, Any, int]]] = {}

    def push(self, t: float, kind: int, conv: Any, ver: int) -> None:
        bucket = self.due.get(t)
        if bucket is None:
            self.due[t] = [(kind, conv, ver)]
            heapq.heappush(self.times, t)
        else:
            bucket.append((kind, conv, ver))


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
        self.agenda = Agenda()
        self.measures = Measures(config, scenario, traffic)
        self.now = traffic.start
        self.steps = 0
        self.router: Any = None

    @property
    def waits(self) -> list[float]:
        """Every conversation's wait for its first human reply, in the order they ended."""
        return self.measures.waits

    def _record(self, conv: Conv, outcome: str) -> None:
        """A conversation ended (``outcome``: human, abandoned, bot, blocked, unfinished)."""
        self.measures.record(conv, outcome)

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
                await self._run()
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
        return self.measures.figures(self.label, self.now)

    def _schedule_breaks(self) -> dict[str, Draws]:
        b = self.s.agents.breaks
        if not b.enabled:
            return {}
        out = {}
        for aid in sorted(self.config.agents):
            draws = out[aid] = Draws(self.seed, f"agent:{aid}")
            self.agenda.push(self.traffic.start + b.every_s.quantile(draws.u()), BREAK, aid, 0)
        return out

    async def _run(self) -> None:
        from router.core.models import AcceptEvent, AgentStatusEvent, CloseEvent, Message, TransferEvent
        from router.core.pipeline import InputError, Router

        # Synthetic traffic has unique message ids; recorded traffic may repeat some, as life does.
        reservations = self.s.agents.reservations
        router = self.router = Router(self.config, reservations=reservations, dedupe=not self.traffic.synthetic)
        d = router.dispatcher
        await router.advance(self.traffic.start)
        measures = self.measures
        agenda = self.agenda
        people = self.people = People(self.config, self.s, self.seed, d.agents, agenda.push, measures, self._record)
        handle_message = router.handle_message
        handle_event = router.handle_event
        apply = people.apply
        finish = people.finish
        times = agenda.times
        due = agenda.due
        heappop = heapq.heappop
        live = people.live
        push = agenda.push
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
        bot_close = self.s.buyers.bot_close_after_s
        timers = d._timers  # the dispatcher's timer heap: its head is due no later than next_due()
        messages = 0

        async def close(conv: Conv, now: float) -> list[Any]:
            try:
                return await handle_event(CloseEvent(conv.cid, now))
            except InputError:
                return []

        async def transfer(conv: Conv, to: str, now: float) -> None:
            try:
                apply(await handle_event(TransferEvent(conv.cid, to_skill=to, ts=now)), now)
            except InputError:
                measures.bad_inputs += 1

        while True:
            # Drop the head's actions that can no longer do anything (a buyer's leave timer once
            # a human replied, an agent's step on a chat that moved on) without moving the clock
            # to them: a patience of days must not stretch the run to days.
            while times:
                th = times[0]
                bucket = due[th]
                kind, conv, ver = bucket[0]
                if kind < RELEASE and (
                        conv.closed
                        or (kind in VERSIONED and ver != conv.ver)
                        or (kind == LEAVE and conv.replied is not None)
                        or (kind == IDLE and (ver != conv.nmsg or conv.need_at is not None))):
                    if len(bucket) == 1:
                        del due[th]
                        heappop(times)
                    else:
                        bucket.pop(0)
                    continue
                if kind >= BREAK and not live and i >= n and not releasing:
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
                if kind == MSG:
                    spec = conv.spec
                    k = conv.nmsg
                    msg = spec.recorded[k] if spec.recorded else Message(
                        spec.shop_id, f"sm-{spec.index}-{k}", spec.buyer_id, spec.texts[k], "text", t,
                        spec.buyer, spec.order)
                elif kind == ACCEPT:
                    try:
                        await handle_event(AcceptEvent(conv.cid, conv.agent, t))  # type: ignore[arg-type]
                    except InputError:
                        continue
                    people.accepted(conv, t)
                    continue
                elif kind == REPLY:
                    people.replied(conv, t, ver)
                    continue
                elif kind == CLOSE:
                    people.closed(conv, t)
                    releasing += 1
                    continue
                elif kind == RELEASE:
                    releasing -= 1
                    if conv.agent is not None:
                        people.unassign(conv, t)
                    apply(await close(conv, t), t)
                    continue
                elif kind == LEAVE:
                    moved = await close(conv, t)
                    finish(conv, t, "abandoned")
                    apply(moved, t)
                    continue
                elif kind == IDLE:
                    moved = await close(conv, t) if conv.cid in d.conversations else []
                    finish(conv, t, "bot" if conv.answered else "blocked")
                    apply(moved, t)
                    continue
                elif kind == TRANSFER:
                    conv.transferred = True
                    need = people.needed_skill(conv) or conv.skill
                    if need is not None:
                        measures.need_transfers += 1
                        await transfer(conv, need, t)
                    continue
                elif kind == HANDOFF:
                    if conv.need_at is None and conv.skill is not None:
                        measures.handoffs[conv.mode] += 1
                        await transfer(conv, conv.skill, t)
                    continue
                elif kind == BREAK:
                    st = d.agents.get(conv)
                    if st is not None and st.status == "online" and st.in_shift:
                        measures.breaks += 1
                        apply(await handle_event(AgentStatusEvent(conv, "break", t)), t)
                        push(t + brk.length_s.quantile(breaks[conv].u()), BACK, conv, 0)
                    else:
                        push(t + brk.every_s.quantile(breaks[conv].u()), BREAK, conv, 0)
                    continue
                else:  # BACK
                    st = d.agents.get(conv)
                    if st is not None and st.status == "break":
                        apply(await handle_event(AgentStatusEvent(conv, "online", t)), t)
                    push(t + brk.every_s.quantile(breaks[conv].u()), BREAK, conv, 0)
                    continue
            else:
                kind, item = arrivals[i][1], arrivals[i][2]
                i += 1
                if kind == _A_EVENT:
                    try:
                        apply(await handle_event(item), t)
                    except InputError:
                        measures.bad_inputs += 1
                    continue
                spec = item
                conv = people.arrive(spec)
                old = live.get(conv.cid)
                if old is not None:  # the same buyer again while the last chat was still open
                    moved = await close(old, t)
                    finish(old, t, "human" if old.replied is not None else
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
                measures.bad_inputs += 1
            else:
                messages += 1
                apply(decisions, t)
            times_ = conv.spec.times
            if conv.closed:
                measures.dropped_messages += len(times_) - k
            elif k < len(times_):
                push(times_[k], MSG, conv, 0)
            elif conv.need_at is None:
                # the buyer's last message and no human needed: the chat ends when they go quiet
                push(t + bot_close, IDLE, conv, k)
        measures.messages = messages
        self.steps = steps
        for conv in list(live.values()):
            finish(conv, self.now, "unfinished")
        if progress is not None:
            progress(self.now)


async def simulate(config: Config, scenario: Scenario, traffic: Traffic, seed: int, label: str = "",
                   progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Run one policy (one config) over ``traffic`` and return its figures."""
    return await Simulation(config, scenario, traffic, seed, label, progress).run()
