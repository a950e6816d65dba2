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


def tune_gc(threshold0: int = FEW_PAUSES[0], threshold1: int = FEW_PAUSES[1], threshold2: int | None = None) -> None:
    """Move everything allocated so far out of the collector's sight and set how often it
    collects (:data:`FEW_PAUSES`, :data:`BACKSTOP`; without ``threshold2``, CPython's, at least
    50). Reference counting still frees almost everything; the GC only has to find cycles."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold0, threshold1, max(gc.get_threshold()[2], 50) if threshold2 is None else threshold2)


#: The server's collector (:class:`Pacer`): a young collection every ``PACE_S`` of the event
#: loop's time, a middle one instead once ``MIDDLE_EVERY`` times that has passed since the last.
#: With 1 every step is a middle one: in bench_latency's server that cost 30 % less collector CPU
#: than 10 (each survivor is scanned once, not twice) and its longest step was 2.1–2.7 ms of CPU
#: instead of 4–9. Every 20 ms rather than 10: at 1,000 requests/s the collector's CPU fell from
#: 149 to 89–113 ms in 10 s (fewer requests in flight at a step, so fewer survivors to scan) and
#: the longest step stayed under 1 ms of CPU.
PACE_S = 0.02
MIDDLE_EVERY = 1
#: CPython's own collections stay on as a backstop, at a threshold the pacer's collections keep
#: the count from reaching while the loop turns often. When it does not (an overload: one turn of
#: the loop runs hundreds of callbacks, 50–200 ms, and a timer fires once per turn), they collect
#: the young generation after every 5,000 allocations as before the pacer, instead of letting one
#: late step scan everything allocated meanwhile. Never the old generation (``threshold2`` out of
#: reach): a full collection is the pacer's to place.
BACKSTOP = (5_000, 10, 2**31 - 1)
#: A full collection (of what survived since the start; the start-up heap stays frozen) once the
#: allocator holds this fraction more blocks than after the last one: the bound on the memory
#: cyclic garbage in the old generation can hold ...
FULL_GROWTH = 1.0
#: ... or this fraction (CPython's own rule), once the loop has been quiet (fewer than
#: ``QUIET_OBJECTS`` young objects at each of the last ``QUIET_STEPS`` steps, a second): the long
#: pause where nobody waits.
IDLE_GROWTH = 0.25
QUIET_OBJECTS = 200
QUIET_STEPS = 50
#: How often the heap's growth is looked at (:func:`sys.getallocatedblocks` walks the arenas:
#: 0.1 ms at 3.5 million blocks, 0.5 % of a core if every 20 ms step asked).
GROWTH_CHECK_S = 1.0


class _Running:
    """How many pacers run in this process, and CPython's thresholds from before the first: a
    process that outlives its servers (tests, an embedding application) gets them back when the
    last one stops, instead of keeping a backstop that never collects the old generation."""

    count = 0
    saved: tuple[int, ...] | None = None


class Pacer:
    """Runs the server's collector from the event loop, between callbacks, in short steps.

    CPython collects inside whichever allocation crosses the threshold, so a request or a
    routing step pays for the collection, and nearly every young object of a routing service
    survives it (the pools' entries, the conversations' tuples): pauses of 4–31 ms of CPU
    (docs/service.md, "Latency"). Instead, every ``every`` seconds a young collection of what
    was allocated since, and every ``every × middle_every`` seconds a middle one instead, which
    moves its survivors to the old generation: no young or middle collection scans more than the
    last ``every × middle_every`` seconds' survivors.

    The old generation is only scanned by a full collection, and the pacer places those: once
    the allocator's block count (:func:`sys.getallocatedblocks`) has grown by ``full_growth`` of
    what it was after the last one, or by ``idle_growth`` while the loop is quiet (few young
    objects at each step for ``QUIET_STEPS`` steps), so that the one long pause (all the
    survivors since the start: ≈ 50–200 ms of CPU in the benchmark's server) usually falls where
    no request waits for it. None while a steady service's heap keeps its size; cyclic garbage
    never holds more than ``full_growth`` of the live heap.
    """

    def __init__(self, every: float = PACE_S, middle_every: int = MIDDLE_EVERY,
                 full_growth: float = FULL_GROWTH, idle_growth: float = IDLE_GROWTH) -> None:
        self.every = every
        self.middle_every = middle_every
        self.full_growth = full_growth
        self.idle_growth = idle_growth
        self.quiet = 0  # consecutive steps that found fewer than QUIET_OBJECTS young objects
        self.steps = 0
        self.fulls = 0
        self._blocks = 0  # the allocator's blocks after the last full collection (or the start)
        self._middle_at = 0.0  # when the last middle step ran
        self._grown_at = 0.0  # when the heap's growth was last looked at
        self._running = False

    def start(self) -> None:
        """Freeze what exists and set the backstop thresholds (then call :meth:`step`, or run
        :meth:`run`; :meth:`stop` at the end)."""
        if not self._running:
            if _Running.count == 0:
                _Running.saved = gc.get_threshold()
            _Running.count += 1
            self._running = True
        tune_gc(*BACKSTOP)
        self._blocks = sys.getallocatedblocks()
        self._middle_at = time.monotonic()

    def step(self, now: float | None = None) -> None:
        """A young collection; once ``every × middle_every`` seconds have passed since the last
        middle one, a middle one instead, and a full one if the heap has grown enough (see the
        class). ``now``: :func:`time.monotonic`."""
        self.steps += 1
        self.quiet = self.quiet + 1 if len(gc.get_objects(0)) < QUIET_OBJECTS else 0
        now = time.monotonic() if now is None else now
        if now - self._middle_at < self.every * self.middle_every:
            gc.collect(0)
            return
        self._middle_at = now
        gc.collect(1)
        if now - self._grown_at < GROWTH_CHECK_S:
            return
        self._grown_at = now
        growth = sys.getallocatedblocks() / self._blocks - 1
        if growth > self.full_growth or (growth > self.idle_growth and self.quiet >= QUIET_STEPS):
            self.full()

    def full(self) -> None:
        """Collect everything but the start-up heap (cycles in the old generation included)."""
        started, blocks = time.perf_counter(), sys.getallocatedblocks()
        found = gc.collect()
        self.fulls += 1
        self._blocks = sys.getallocatedblocks()
        log.info("gc_full", blocks_before=blocks, blocks_after=self._blocks, collected=found, quiet=self.quiet,
                 ms=round((time.perf_counter() - started) * 1000, 1))

    def stop(self) -> None:
        """CPython's own thresholds again once no other pacer runs in the process."""
        if not self._running:
            return
        self._running = False
        _Running.count -= 1
        if _Running.count == 0 and _Running.saved is not None:
            gc.set_threshold(*_Running.saved)
            _Running.saved = None

    async def run(self) -> None:
        """A :meth:`step` every ``every`` seconds, each in a callback of its own (after
        :meth:`start`), until cancelled: then :meth:`stop`."""
        import asyncio

        try:
            while True:
                await asyncio.sleep(self.every)
                self.step()
        finally:
            self.stop()
