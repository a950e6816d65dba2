"""Process-level tuning for long-lived routers.

A router holds a large, long-lived heap (configuration, automata, conversations). CPython's
generational GC keeps re-scanning it: full collections paused a long-running router for up to
170 ms on this machine, and p99 latency fell from 70 ms to 15 ms once the start-up heap was
frozen and the thresholds raised. So: load the configuration, then call :func:`tune_gc`.

How high depends on who waits. A batch run (``fenliu route``, the benchmarks of routing) wants
few collections: :func:`tune_gc` with :data:`FEW_PAUSES`. A server answering requests wants short
ones, and not inside a request: almost every young object of a routing service survives its
first collection (the pools' heap entries, the conversations' small tuples and lists), so with
CPython's thresholds a collection's pause grows with the threshold (35–68 ms of CPU at 50,000 on
the test machine, 4–31 ms at 5,000) and lands in whichever request allocated last. ``fenliu
serve`` runs its collections itself from the event loop (:class:`Pacer`, docs/service.md,
"Latency").
"""

from __future__ import annotations

import gc
import sys
import time

import structlog

log = structlog.get_logger("fenliu.gc")

#: ``(threshold0, threshold1)`` for a batch run.
FEW_PAUSES = (50_000, 20)


def tune_gc(threshold0: int = FEW_PAUSES[0], threshold1: int = FEW_PAUSES[1]) -> None:
    """Move everything allocated so far out of the collector's sight and set how often it
    collects (:data:`FEW_PAUSES`). Reference counting still frees almost
    everything; the GC only has to find cycles."""
    gc.collect()
    gc.freeze()
    t2 = gc.get_threshold()[2]
    gc.set_threshold(threshold0, threshold1, max(t2, 50))


#: The server's collector (:class:`Pacer`): a young collection every ``PACE_S`` of the event
#: loop's time, a middle one (whose survivors are then frozen) instead once ``MIDDLE_EVERY``
#: times that has passed since the last. With 1 every step is a middle one: in bench_latency's
#: server that cost 30 % less collector CPU than 10 (each survivor is scanned once, not twice)
#: and its longest step was 2.1–2.7 ms of CPU instead of 4–9, for ≈ 2.5× the cycles frozen until
#: a thaw (8,314 objects at the thaw after ≈ 60,000 requests, against 3,368). Every 20 ms rather
#: than 10: at 1,000 requests/s the collector's CPU fell from 149 to 89–113 ms in 10 s (fewer
#: requests in flight at a step, so fewer survivors to scan) and the longest step stayed under
#: 1 ms of CPU.
PACE_S = 0.02
MIDDLE_EVERY = 1
#: CPython's own collections stay on as a backstop, at a threshold the pacer's young collections
#: keep the count from reaching while the loop turns often. When it does not (an overload: one
#: turn of the loop runs hundreds of callbacks, 50–200 ms, and a timer fires once per turn), they
#: collect after every 5,000 allocations as before the pacer, instead of letting one late step
#: scan everything allocated meanwhile.
BACKSTOP = (5_000, 10, 10)
#: A thaw (everything unfrozen and collected, then frozen again) once the allocator holds this
#: fraction more blocks than after the last one: the bound on what freezing can keep alive ...
THAW_GROWTH = 1.0
#: ... or this fraction, once the loop has been quiet (fewer than ``QUIET_OBJECTS`` young objects
#: at each of the last ``QUIET_STEPS`` steps, a second): the long pause where nobody waits.
IDLE_GROWTH = 0.25
QUIET_OBJECTS = 200
QUIET_STEPS = 50
#: How often the heap's growth is looked at (:func:`sys.getallocatedblocks` walks the arenas:
#: 0.1 ms at 3.5 million blocks, 0.5 % of a core if every 20 ms step asked).
GROWTH_CHECK_S = 1.0


class Pacer:
    """Runs the server's collector from the event loop, between callbacks, in short steps.

    CPython collects inside whichever allocation crosses the threshold, so a request or a
    routing step pays for the collection, and nearly every young object of a routing service
    survives it (the pools' entries, the conversations' tuples): pauses of 4–31 ms of CPU
    (docs/service.md, "Latency"). Instead, every ``every`` seconds a young collection of what
    was allocated since, and every ``every × middle_every`` seconds a middle one instead, whose
    survivors are frozen: what outlived it is out of every later collection's sight, so no
    collection scans more than the last ``every × middle_every`` seconds' survivors.

    Freezing keeps alive the cycles those objects form once they are garbage (reference counting
    still frees everything else, frozen or not). So the allocator's block count
    (:func:`sys.getallocatedblocks`, cheap: it adds up the arenas' pools) is watched: once it has
    grown by ``thaw_growth`` of what it was after the last thaw, everything is unfrozen,
    collected and frozen again. That is one long pause (a full collection of the whole heap:
    ≈ 250 ms of CPU in the benchmark's server) per doubling of the process's objects and none
    while a steady service's heap keeps its size, and it bounds the memory cyclic garbage can
    hold to ``thaw_growth`` of the live heap. A quiet loop (few young objects at each step for
    ``QUIET_STEPS`` steps) is thawed sooner, at ``idle_growth``, so that the pause usually falls
    where no request waits for it.
    """

    def __init__(self, every: float = PACE_S, middle_every: int = MIDDLE_EVERY,
                 thaw_growth: float = THAW_GROWTH, idle_growth: float = IDLE_GROWTH) -> None:
        self.every = every
        self.middle_every = middle_every
        self.thaw_growth = thaw_growth
        self.idle_growth = idle_growth
        self.quiet = 0  # consecutive steps that found fewer than QUIET_OBJECTS young objects
        self.steps = 0
        self.thaws = 0
        self._blocks = 0  # the allocator's blocks after the last thaw (or the start)
        self._middle_at = 0.0  # when the last middle step ran
        self._grown_at = 0.0  # when the heap's growth was last looked at

    def start(self) -> None:
        """Freeze what exists and set the backstop thresholds (then call :meth:`step`, or run :meth:`run`)."""
        tune_gc(*BACKSTOP[:2])
        gc.set_threshold(*BACKSTOP)
        self._blocks = sys.getallocatedblocks()
        self._middle_at = time.monotonic()

    def step(self, now: float | None = None) -> None:
        """A young collection; once ``every × middle_every`` seconds have passed since the last
        middle one, a middle one and a freeze instead, and a thaw if the heap has grown enough
        (see the class). ``now``: :func:`time.monotonic`."""
        self.steps += 1
        self.quiet = self.quiet + 1 if len(gc.get_objects(0)) < QUIET_OBJECTS else 0
        now = time.monotonic() if now is None else now
        if now - self._middle_at < self.every * self.middle_every:
            gc.collect(0)
            return
        self._middle_at = now
        gc.collect(1)
        gc.freeze()
        if now - self._grown_at < GROWTH_CHECK_S:
            return
        self._grown_at = now
        growth = sys.getallocatedblocks() / self._blocks - 1
        if growth > self.thaw_growth or (growth > self.idle_growth and self.quiet >= QUIET_STEPS):
            self.thaw()

    def thaw(self) -> None:
        """Unfreeze everything, collect it all (cycles among once-frozen objects included), freeze again."""
        started, blocks = time.perf_counter(), sys.getallocatedblocks()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self.thaws += 1
        self._blocks = sys.getallocatedblocks()
        log.info("gc_thaw", blocks_before=blocks, blocks_after=self._blocks, collected=found, quiet=self.quiet,
                 ms=round((time.perf_counter() - started) * 1000, 1))

    async def run(self) -> None:
        """A :meth:`step` every ``every`` seconds, each in a callback of its own (after :meth:`start`)."""
        import asyncio

        while True:
            await asyncio.sleep(self.every)
            self.step()
