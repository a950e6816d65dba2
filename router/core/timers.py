"""The dispatch clock's timers: shift and business-hour boundaries, skill-expansion timeouts and
reservation timeouts, in one heap run whenever the clock advances."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Any

from router.core.models import Conversation

#: ``(when, seq, kind, ident, stamp)``: ``kind`` is ``shift`` (``ident`` an agent), ``shop``,
#: ``expand`` or ``reserve`` (a conversation, with the :func:`stamp` it must still match).
Timer = tuple[float, int, str, str, Any]


def stamp(conv: Conversation) -> tuple[int, int]:
    """What a conversation's timer must still match to fire. The version alone is not enough: a
    buyer who comes back opens a new conversation under the same id, whose versions start again,
    so a timer left by the old one could otherwise fire on the new one."""
    return (conv.seq, conv.version)


class Timers(list[Timer]):
    """The timer heap. A plain list underneath (``heapq`` works on it, and the pipeline and the
    simulator read its head directly on their hot paths)."""

    __slots__ = ()

    def add(self, when: float, seq: int, kind: str, ident: str, stamp: Any = 0) -> None:
        heapq.heappush(self, (when, seq, kind, ident, stamp))

    def due(self, now: float) -> bool:
        return bool(self) and self[0][0] <= now

    def pop_due(self, now: float) -> Iterator[Timer]:
        """The timers due by ``now``, in time order, including those added while iterating."""
        while self and self[0][0] <= now:
            yield heapq.heappop(self)

    def keep(self, kinds: Iterable[str]) -> None:
        """Drop every timer whose kind is not among ``kinds``."""
        kinds = frozenset(kinds)
        self[:] = [t for t in self if t[2] in kinds]
        heapq.heapify(self)

    def next_due(self, conversations: dict[str, Conversation]) -> float | None:
        """When the next timer that can still do something falls due. Timers of conversations
        that moved on since (a reservation accepted, a queued chat assigned before its
        expansion, a closed one) are dropped from the head on the way: firing them would do
        nothing, so a caller that sleeps until the next timer (the simulator) need not wake for
        them."""
        while self:
            when, _, kind, ident, mark = self[0]
            if kind == "reserve" or kind == "expand":
                conv = conversations.get(ident)
                if conv is None or stamp(conv) != mark or (kind == "reserve" and conv.state != "reserved"):
                    heapq.heappop(self)
                    continue
            return when
        return None
