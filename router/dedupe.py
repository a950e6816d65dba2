"""Which ``(shop_id, msg_id)`` pairs the router has seen: idempotent ingest.

Platforms and bridges resend messages (a lost acknowledgement, a bridge replaying its log), so a
message id seen before must be answered ``duplicate`` and never routed again. The last
``window`` pairs are kept exactly, in insertion order, in a dict. Keeping every pair exactly would
cost ≈ 150 bytes each, so pairs pushed out of the window go into Bloom filters (rbloom) instead,
at ≈ 2 bytes each: a pair not in the window is then either certainly new (the filters say no: the
common case, ≈ 0.2 µs) or *maybe* seen long ago, and only then does the caller ask the store,
which holds the exact answer (the journal's unique index). Without the filters an old duplicate
was routed again and then refused by that index, failing its whole batch.

The filters grow geometrically (each twice the capacity of the one before), so a long history
costs a few filter checks, not one per window's worth of messages. Each is sized for
``FALSE_POSITIVE`` at capacity; a false positive costs one store lookup, never a lost message.
"""

from __future__ import annotations

from rbloom import Bloom

#: Pairs kept exactly.
WINDOW = 1_000_000
#: False-positive rate of each filter of evicted pairs at its capacity.
FALSE_POSITIVE = 0.001


class SeenIds:
    """The pairs seen: exact for the last ``window``; with ``keep_evicted``, the older ones in
    Bloom filters (:meth:`maybe_seen_long_ago`)."""

    __slots__ = ("window", "_recent", "_filters", "_room", "_keep")

    def __init__(self, window: int = WINDOW, *, keep_evicted: bool = False) -> None:
        self.window = window
        self._recent: dict[tuple[str, str], None] = {}
        self._filters: list[Bloom] = []
        self._room = 0  # pairs the newest filter takes before the next, larger one starts
        self._keep = keep_evicted

    def seen_before(self, shop_id: str, msg_id: str) -> bool:
        """Whether the pair is in the window; if not, it is added (the router's dedupe)."""
        key = (shop_id, msg_id)
        recent = self._recent
        if key in recent:
            return True
        recent[key] = None
        if len(recent) > self.window:
            old = next(iter(recent))
            del recent[old]
            if self._keep:
                self._evict(old)
        return False

    def maybe_seen_long_ago(self, shop_id: str, msg_id: str) -> bool:
        """Whether the pair, not in the window, may have been pushed out of it: ``False`` is
        certain; ``True`` means ask the store."""
        if not self._filters:
            return False
        key = (shop_id, msg_id)
        if key in self._recent:
            return False
        return any(key in f for f in self._filters)

    def _evict(self, key: tuple[str, str]) -> None:
        if self._room == 0:
            capacity = self.window << len(self._filters)
            self._filters.append(Bloom(capacity, FALSE_POSITIVE))
            self._room = capacity
        self._filters[-1].add(key)
        self._room -= 1
