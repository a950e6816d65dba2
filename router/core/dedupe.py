"""Which ``(shop_id, msg_id)`` pairs the router has seen: idempotent ingest.

Platforms and bridges resend messages (a lost acknowledgement, a bridge replaying its log), so a
message id seen before must be answered ``duplicate`` and never routed again. The last ``window``
pairs are kept exactly: a set per shop answers, a deque remembers their order. (A dict popped from
the front, ``del d[next(iter(d))]``, looked equivalent but costs time in proportion to the pairs
deleted since its last resize: 43 µs a message with a window of 100,000, against ≈ 1 µs now;
``bench/bench_dedupe.py``.) Keeping every pair exactly would cost ≈ 120 bytes each (RSS over a
million ids; 234 with a tuple per pair), so pairs pushed out of the window go into Bloom filters
(rbloom) instead, at ≈ 2 bytes each: a pair not in the window is then either certainly new (the
filters say no: the common case, ≈ 0.2 µs) or *maybe* seen long ago, and only then does the caller
ask the store, which holds the exact answer (the journal's unique index). Without the filters an
old duplicate was routed again and then refused by that index, failing its whole batch.

The filters grow geometrically (each twice the capacity of the one before), so a long history
costs a few filter checks, not one per window's worth of messages. Each is sized for
``FALSE_POSITIVE`` at capacity; a false positive costs one store lookup, never a lost message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from rbloom import Bloom

#: Pairs kept exactly.
WINDOW = 1_000_000
#: False-positive rate of each filter of evicted pairs at its capacity.
FALSE_POSITIVE = 0.001


class _ShopIds(set[str]):
    """One shop's message ids in the window. It knows its shop, so the order of arrival is kept
    as ``(this set, msg_id)`` in two deque slots: no tuple per message, and no message's own
    copy of the shop id kept alive (≈ 100 bytes a pair less; a tuple key also cost its
    allocation and hash on every message)."""

    __slots__ = ("shop",)

    def __init__(self, shop: str) -> None:
        super().__init__()
        self.shop = shop


class SeenIds:
    """The pairs seen: exact for the last ``window``; with ``keep_evicted``, the older ones in
    Bloom filters (:meth:`maybe_seen_long_ago`)."""

    __slots__ = ("window", "_recent", "_order", "_filters", "_room", "_keep", "_slots")

    def __init__(self, window: int = WINDOW, *, keep_evicted: bool = False) -> None:
        self.window = window
        self._slots = 2 * window  # the deque's length when the window is full
        self._recent: dict[str, _ShopIds] = {}
        self._order: deque[_ShopIds | str] = deque()  # per pair: its shop's set, then its msg_id
        self._filters: list[Bloom] = []
        self._room = 0  # pairs the newest filter takes before the next, larger one starts
        self._keep = keep_evicted

    def seen_before(self, shop_id: str, msg_id: str) -> bool:
        """Whether the pair is in the window; if not, it is added (the router's dedupe)."""
        ids = self._recent.get(shop_id)
        if ids is None:
            ids = self._recent[shop_id] = _ShopIds(shop_id)
        elif msg_id in ids:
            return True
        ids.add(msg_id)
        order = self._order
        order.append(ids)
        order.append(msg_id)
        if len(order) > self._slots:
            old: _ShopIds = order.popleft()  # type: ignore[assignment]
            old_id: str = order.popleft()  # type: ignore[assignment]
            old.discard(old_id)
            if self._keep:
                self._evict((old.shop, old_id))
        return False

    def maybe_seen_long_ago(self, shop_id: str, msg_id: str) -> bool:
        """Whether the pair, not in the window, may have been pushed out of it: ``False`` is
        certain; ``True`` means ask the store."""
        if not self._filters:
            return False
        ids = self._recent.get(shop_id)
        if ids is not None and msg_id in ids:
            return False
        key = (shop_id, msg_id)
        return any(key in f for f in self._filters)

    def remember_old(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Pairs known to be older than the window (a restart reading them back from the
        journal in index order): straight into the filters."""
        if self._keep:
            for key in pairs:
                self._evict(key)

    def _evict(self, key: tuple[str, str]) -> None:
        if self._room == 0:
            capacity = self.window << len(self._filters)
            self._filters.append(Bloom(capacity, FALSE_POSITIVE))
            self._room = capacity
        self._filters[-1].add(key)
        self._room -= 1
