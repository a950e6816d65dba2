"""What moving the dispatch clock does to a :class:`~router.core.dispatch.Dispatcher`.

The timers (:mod:`router.core.timers`) fall due in time order, and each one is applied at its
own time: a shift or business-hours boundary opens or closes agents and shops (and a shop or
agent that opens takes waiting conversations), a skill-expansion timeout widens a queued
conversation's targets, a reservation that was not accepted in time goes to another agent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.core.models import Decision
from router.core.timers import Timer, stamp

if TYPE_CHECKING:
    from router.core.dispatch import Dispatcher


def start(d: Dispatcher, now: float) -> None:
    """The clock's first reading (or a new configuration under a running clock): which shops
    are open and which agents in shift, and when that changes next."""
    for sid, shop in d.config.shops.items():
        d._shop_open[sid] = shop.is_open(now)
        schedule(d, "shop", sid, shop.hours.next_change(now))
    for aid, acfg in d.config.agents.items():
        st = d.agents[aid]
        st.in_shift = acfg.shift.is_open(now)
        schedule(d, "shift", aid, acfg.shift.next_change(now))


def schedule(d: Dispatcher, kind: str, ident: str, when: float | None) -> None:
    """A shift or business-hours boundary of ``ident`` at ``when`` (``None``: never again)."""
    if when is not None:
        d._timers.add(when, next(d._timer_seq), kind, ident)


def advance(d: Dispatcher, now: float) -> list[Decision]:
    """Move the clock to ``now`` (never backwards) and run what fell due, in time order."""
    if d.now is None:
        d.now = now
        start(d, now)
        d._pools.recount(d.config.shops)
        for st in d.agents.values():
            d._pools.touch(st, force=True)
        return []
    if now < d.now:
        return []
    decisions: list[Decision] = []
    for timer in d._timers.pop_due(now):
        d.now = max(d.now, timer[0])
        decisions.extend(_fire(d, timer))
    d.now = now
    return decisions


def _fire(d: Dispatcher, timer: Timer) -> list[Decision]:
    _, _, kind, ident, mark = timer
    now = d.now
    assert now is not None
    if kind == "shift":
        acfg = d.config.agents.get(ident)
        st = d.agents.get(ident)
        if acfg is None or st is None:
            return []
        d._pools.set_online(st, lambda: setattr(st, "in_shift", acfg.shift.is_open(now)))
        schedule(d, "shift", ident, acfg.shift.next_change(now))
        d._pools.touch(st)
        return d._drain_agent(st) if st.available else []
    if kind == "shop":
        shop = d.config.shops.get(ident)
        if shop is None:
            return []
        d._shop_open[ident] = shop.is_open(now)
        schedule(d, "shop", ident, shop.hours.next_change(now))
        return d._drain_shop(ident) if d._shop_open[ident] else []
    conv = d.conversations.get(ident)
    if conv is None or stamp(conv) != mark:
        return []
    if kind == "expand":
        return d._expand(conv)
    if kind == "reserve" and conv.state == "reserved":
        agent = conv.agent_id
        d._release(conv)
        conv.history.append({"event": "reservation_timeout", "agent_id": agent, "ts": now})
        out = [d._route_again(conv, "reservation_timeout", exclude=agent)]
        st = d.agents.get(agent or "")
        if st is not None:
            out.extend(d._drain_agent(st, exclude_conv=conv.id))
        return out
    return []
