"""``[queue]``: in which order waiting conversations are served.

``discipline = "priority"`` (the default) serves the highest effective priority first
(``priority + aging_per_minute × minutes waited``), then arrival. ``discipline = "deadline"``
serves by the platform's own rule instead: Pinduoduo counts a conversation as answered in time
when a *human* replies within 3 minutes of the buyer's first message inside the reply window
(08:00–23:00); a conversation that already missed that can no longer count, and serving it first
costs the next one its deadline too. So:

1. a conversation more than ``starve_after_s`` past its deadline goes first (earliest deadline
   first among those): the anti-starvation bound — once that late, no conversation that arrived
   after it is served before it, so its wait is at most its deadline + ``starve_after_s`` plus
   the time to serve the (earlier-deadline) starving conversations ahead of it;
2. then the conversations that can still meet their deadline, earliest deadline first (EDF
   maximises the number that meet it when they all can). "Can still" means the deadline is at
   least ``reply_margin_s`` away: the deadline is for the agent's first *reply*, and a busy
   agent takes a while from the assignment to it (accepting, then typing in several windows).
   One picked with less time left misses anyway, and serving it first makes a fresher
   conversation wait past its own deadline too: under a rush plain EDF serves everyone at the
   edge of their deadline and many miss it;
3. then those that missed it (or never counted: first message outside the window, or a human
   already served them before a transfer), earliest deadline first.

The deadline is ``first message + reply_within_s − priority × priority_s``: a point of priority
(VIP, urgent words) makes it ``priority_s`` seconds earlier. ``reply_within_s`` and
``reply_window`` default to the configuration's ``defaults`` and can be set per platform.
Picks stay O(log n): each queue keeps a heap of conversations still in time and a heap of late
ones; a conversation moves from the first to the second at most once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

from router.core.config import Platform
from router.core.hookspecs import hookimpl


class PlatformDeadline(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One platform's reply rule: a human reply within ``reply_within_s`` of the buyer's first
    message, for first messages inside the local ``reply_window``."""

    reply_within_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] | None = None
    reply_window: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        from router.core.schedule import _parse_hhmm

        for value in self.reply_window or ():
            try:
                _parse_hhmm(value)
            except ValueError as exc:
                raise ValueError(f"field reply_window: {exc}") from None


class QueueSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    discipline: Literal["priority", "deadline"] = "priority"
    starve_after_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 120.0
    reply_margin_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 0.0
    priority_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 1.0
    platforms: dict[Platform, PlatformDeadline] = {}


@hookimpl
def fenliu_policy_sections() -> Mapping[str, type[msgspec.Struct]]:
    return {"queue": QueueSection}
