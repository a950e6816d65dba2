"""Conversations waiting for an agent, in the order they are to be served.

One *queue* per ``(shop, skill)``: a heap of waiting conversations keyed by
``priority - aging_per_minute × queued_at / 60`` (the effective priority's time-invariant part,
so aging needs no re-sorting), then arrival. Under the policy's ``[queue] discipline =
"deadline"`` (:mod:`policies.deadline`) the heap is keyed by the platform deadline instead, with
a second heap per queue for the conversations past it. Entries are ``(key, seq, version, id)``
and invalidated lazily: an entry whose conversation moved on (another version, no longer
queued) is dropped when it reaches the top.

:class:`Queues` holds plain data only (the dispatcher's snapshot pickles it).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from router.core.models import Conversation

if TYPE_CHECKING:
    from router.core.config import Config, DispatchConfig

Entry = tuple[float, int, int, str]
#: A queue's next conversation as a rank comparable across queues: ``(class, value, seq, id)``.
Rank = tuple[int, float, int, str]


class DeadlineRule:
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


def deadline_rule(config: Config, shop_id: str) -> DeadlineRule | None:
    """The shop's deadline rule, or ``None`` under the priority discipline."""
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
    return DeadlineRule(within, window, section.starve_after_s, section.priority_s, section.reply_margin_s)


class Queues:
    """Every shop's waiting conversations, per ``(shop, skill)``."""

    def __init__(self, conversations: dict[str, Conversation], aging: dict[str, float],
                 deadline: dict[str, DeadlineRule]) -> None:
        self.conversations = conversations
        #: per shop, its policy's ``aging_per_minute``
        self.aging = aging
        #: per shop under the deadline discipline, its rule
        self.deadline = deadline
        self.live: dict[tuple[str, str], list[Entry]] = {}
        self.late: dict[tuple[str, str], list[Entry]] = {}
        #: entries in all the heaps, stale ones included: none means nobody waits, and an agent
        #: freed then need not look at each of its queues
        self.entries = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle (a snapshot), counting the entries when it was taken before they were."""
        self.__dict__.update(state)
        if "entries" not in state:
            self.entries = sum(map(len, self.live.values())) + sum(map(len, self.late.values()))

    @classmethod
    def for_config(cls, conversations: dict[str, Conversation], config: Config,
                   policy: dict[str, DispatchConfig]) -> Queues:
        """Empty queues under ``config`` (``policy``: each shop's dispatch policy)."""
        rules = {sid: rule for sid in config.shops if (rule := deadline_rule(config, sid)) is not None}
        return cls(conversations, {sid: p.aging_per_minute for sid, p in policy.items()}, rules)

    def push(self, conv: Conversation, skills: Iterable[str], now: float) -> None:
        """Queue ``conv`` (already marked queued, ``queued_at`` set) for each of ``skills``."""
        queues = self.live
        rule = self.deadline.get(conv.shop_id)
        if rule is None:
            key = -(conv.priority - self.aging[conv.shop_id] * conv.queued_at / 60.0)  # type: ignore[operator]
        else:
            key, counts = rule.deadline(conv)
            if not counts or key < now + rule.margin:
                queues = self.late
        entry = (key, conv.seq, conv.version, conv.id)
        for skill in skills:
            heapq.heappush(queues.setdefault((conv.shop_id, skill), []), entry)
            self.entries += 1

    def keys(self, shop_id: str) -> list[tuple[str, str]]:
        """The shop's queues (waiting or not), in a stable order."""
        return [k for k in sorted({*self.live, *self.late}) if k[0] == shop_id]

    def effective(self, conv: Conversation, now: float | None) -> float:
        """The conversation's priority with its aging while queued."""
        return conv.priority + self.aging[conv.shop_id] * ((now or 0) - (conv.queued_at or 0)) / 60.0

    def _valid_top(self, q: list[Entry] | None) -> Entry | None:
        conversations = self.conversations
        while q:
            entry = q[0]
            conv = conversations.get(entry[3])
            if conv is not None and conv.version == entry[2] and conv.state == "queued":
                return entry
            heapq.heappop(q)
            self.entries -= 1
        return None

    def _deadline_best(self, key: tuple[str, str], rule: DeadlineRule, now: float | None) -> Rank | None:
        """The queue's next conversation under the deadline discipline: class 0 starving
        (``starve_after_s`` past its deadline), 1 still in time (``reply_margin_s`` or more before
        it), 2 late. Conversations whose deadline is nearer than the margin move to the late heap
        (once each)."""
        now = now or 0.0
        live = self.live.get(key)
        late = self.late.get(key)
        while (entry := self._valid_top(live)) is not None and entry[0] < now + rule.margin:
            heapq.heappop(live)  # type: ignore[arg-type]
            if late is None:
                late = self.late[key] = []
            heapq.heappush(late, entry)
        lentry = self._valid_top(late)
        if lentry is not None and now - lentry[0] > rule.starve_after_s:
            return (0, lentry[0], lentry[1], lentry[3])
        if entry is not None:
            return (1, entry[0], entry[1], entry[3])
        if lentry is not None:
            return (2, lentry[0], lentry[1], lentry[3])
        return None

    def best(self, key: tuple[str, str], now: float | None) -> Rank | None:
        """The queue's next conversation; under the priority discipline class 1 and value
        −effective priority."""
        rule = self.deadline.get(key[0])
        if rule is not None:
            return self._deadline_best(key, rule, now)
        entry = self._valid_top(self.live.get(key))
        if entry is None:
            return None
        return (1, -self.effective(self.conversations[entry[3]], now), entry[1], entry[3])

    def best_of(self, keys: Iterable[tuple[str, str]], now: float | None, shop_open: dict[str, bool],
                exclude: str | None = None) -> Rank | None:
        """The next conversation for an agent draining ``keys`` (shops that are closed and the
        conversation ``exclude`` left out): highest effective priority first, arrival breaking
        ties."""
        if not self.entries:
            return None
        live = self.live
        late = self.late
        deadline = self.deadline
        best: Rank | None = None
        for key in keys:
            # most queues are empty
            if not (live.get(key) or late.get(key)) or not shop_open.get(key[0], True):
                continue
            if key[0] in deadline:
                cand = self._deadline_best(key, deadline[key[0]], now)
                if cand is None or cand[3] == exclude:
                    continue
            else:
                entry = self._valid_top(live.get(key))
                if entry is None:
                    continue
                conv = self.conversations[entry[3]]
                if conv.id == exclude:
                    continue
                cand = (1, -self.effective(conv, now), conv.seq, conv.id)
            if best is None or cand[:3] < best[:3]:
                best = cand
        return best
