"""Process-level tuning for long-lived routers.

A router holds a large, long-lived heap (configuration, automata, conversations). CPython's
generational GC keeps re-scanning it: full collections paused a long-running router for up to
170 ms on this machine, and p99 latency fell from 70 ms to 15 ms once the start-up heap was
frozen and the thresholds raised. So: load the configuration, then call :func:`tune_gc`.

How high depends on who waits. A batch run (``fenliu route``, the benchmarks of routing) wants
few collections. A server answering requests wants short ones: almost every young object of a
routing service survives its first collection (the pools' heap entries, the conversations'
small tuples and lists), so a young collection's pause grows with the threshold (35–68 ms of
CPU at 50,000 on the test machine, ≤ 22 ms at 5,000, ≤ 7 ms at 2,000), and a middle-generation
one with the threshold times ``threshold1`` (docs/service.md, "Latency").
"""

from __future__ import annotations

import gc

#: ``(threshold0, threshold1)`` for a batch run and for a server.
FEW_PAUSES = (50_000, 20)
SHORT_PAUSES = (5_000, 5)


def tune_gc(threshold0: int = FEW_PAUSES[0], threshold1: int = FEW_PAUSES[1]) -> None:
    """Move everything allocated so far out of the collector's sight and set how often it
    collects (:data:`FEW_PAUSES`, :data:`SHORT_PAUSES`). Reference counting still frees almost
    everything; the GC only has to find cycles."""
    gc.collect()
    gc.freeze()
    t2 = gc.get_threshold()[2]
    gc.set_threshold(threshold0, threshold1, max(t2, 50))
