"""Who served each closed conversation, for ``sticky_hours``: remembered for the longest sticky
window of any shop and no longer, since a service that runs for weeks closes millions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.core.config import DispatchConfig

#: The memory is pruned at the earliest when it holds this many entries.
MIN_ENTRIES = 1024


class StickyMemory(dict[str, tuple[str, float]]):
    """``conversation id → (agent, closed at)``, in order of closing (a plain dict to its readers:
    the Redis engine's takeover and commits, the snapshots)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit = MIN_ENTRIES

    def remember(self, cid: str, agent: str, at: float, policies: Mapping[str, DispatchConfig]) -> None:
        """``agent`` served ``cid``, closed ``at``. Once the memory has doubled since the last
        time, what closed before every shop's sticky window (``policies``) is dropped, so a
        close pays O(1)."""
        self.pop(cid, None)
        self[cid] = (agent, at)
        if len(self) <= self.limit:
            return
        horizon = at - max((p.sticky_hours for p in policies.values()), default=0.0) * 3600
        stale = []
        for key, (_, closed_at) in self.items():
            if closed_at >= horizon:
                break
            stale.append(key)
        for key in stale:
            del self[key]
        self.limit = max(2 * len(self), MIN_ENTRIES)
