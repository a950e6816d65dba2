"""The collector's tuning (router.core.runtime): what exists at start is frozen, and the thresholds
are the batch run's or the server's; the server's pacer collects in short steps and still
reclaims every cycle."""

from __future__ import annotations

import gc
import sys
import weakref
from itertools import count
from time import monotonic, perf_counter

import pytest

from router.core.inbound import _gc_pauses, gc_pause_within
from router.core.runtime import BACKSTOP, FEW_PAUSES, QUIET_STEPS, Pacer, _Running, tune_gc


@pytest.fixture
def restored_gc():
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    yield
    gc.set_threshold(*thresholds)
    if not frozen:
        gc.unfreeze()


@pytest.mark.parametrize("pauses", [FEW_PAUSES, BACKSTOP[:2]], ids=["batch", "server"])
def test_tune_gc_freezes_what_exists_and_sets_the_thresholds(restored_gc, pauses):
    kept = [object()]  # noqa: F841 - a list is tracked by the collector
    tune_gc(*pauses)
    assert gc.get_threshold()[:2] == pauses and gc.get_threshold()[2] >= 50
    assert gc.get_freeze_count() > 0 and gc.get_count()[0] < 100



class _Node:
    """A cycle's member the collector tracks, with a weak reference to tell when it is freed."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def pacer_gc():
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    yield
    gc.unfreeze()
    gc.collect()
    if frozen:
        gc.freeze()
    gc.set_threshold(*thresholds)
    _Running.count, _Running.saved = 0, None  # the tests' pacers are not all stopped


def test_pacer_collects_young_cycles_in_its_steps(pacer_gc):
    pacer = Pacer(every=1.0, middle_every=3)
    pacer.start()
    assert gc.get_threshold() == BACKSTOP
    t0 = monotonic()
    for i in range(1, 7):  # young steps and middle ones
        gone = _cycle()
        pacer.step(t0 + i)
        assert gone() is None


def test_pacer_steps_are_seen_by_the_hooks_gc_watch(pacer_gc):
    """A hook's budget leaves the collector's pauses out (router.core.inbound): the pacer's
    collections are reported like CPython's own."""
    pacer = Pacer(every=1.0, middle_every=2)
    pacer.start()
    before = len(_gc_pauses)
    start, t0 = perf_counter(), monotonic()
    pacer.step(t0 + 1)  # young
    pacer.step(t0 + 2)  # middle
    assert len(_gc_pauses) >= min(before + 2, _gc_pauses.maxlen)
    assert gc_pause_within(start, perf_counter()) > 0


def test_cycles_in_the_old_generation_are_reclaimed_when_the_heap_grows(pacer_gc):
    """What survives a middle step is out of the steps' sight; a cycle among such objects that
    becomes garbage later is only freed by a full collection, which comes once the heap has
    grown by ``full_growth``: memory stays bounded."""
    pacer = Pacer(every=1.0, middle_every=1, full_growth=0.5, idle_growth=0.5)
    pacer.start()
    later = count(monotonic() + 1)  # every step a middle one
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    pacer.step(next(later))  # the live cycle moves to the old generation
    del a, b
    pacer.step(next(later))
    assert gone() is not None and pacer.fulls == 0  # old garbage, not yet reclaimed
    ballast = []
    while pacer.fulls == 0:
        ballast.append([[] for _ in range(10_000)])
        pacer.step(next(later))
    assert gone() is None


def test_a_steady_heap_gets_no_full_collection(pacer_gc):
    pacer = Pacer(every=1.0, middle_every=1, full_growth=0.5, idle_growth=0.25)
    pacer.start()
    later = count(monotonic() + 1)
    for _ in range(200):
        garbage = [[] for _ in range(1_000)]  # noqa: F841 - freed by reference counting
        pacer.step(next(later))
    assert pacer.fulls == 0


def test_a_cycle_that_dies_before_the_next_middle_step_is_collected_by_it(pacer_gc):
    pacer = Pacer(every=1.0, middle_every=3)
    pacer.start()
    t0 = monotonic()
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    pacer.step(t0 + 1)  # young: the live cycle moves to the middle generation
    del a, b
    pacer.step(t0 + 3)  # middle: found there
    assert gone() is None and pacer.fulls == 0


def test_a_quiet_loop_gets_its_full_collection_at_the_lower_growth(pacer_gc):
    """Busy steps (many young objects each) wait for ``full_growth``; quiet ones get the full
    collection at ``idle_growth``, where no request waits for its pause."""
    pacer = Pacer(every=1.0, middle_every=1, full_growth=10.0, idle_growth=0.25)
    pacer.start()
    later = count(monotonic() + 1)
    ballast = []
    start = sys.getallocatedblocks()
    while sys.getallocatedblocks() < start * 1.5:  # grown past idle_growth, busy all the while
        ballast.append([[] for _ in range(1_000)])
        pacer.step(next(later))
    assert pacer.fulls == 0 and pacer.quiet == 0
    for _ in range(QUIET_STEPS):
        pacer.step(next(later))
    assert pacer.fulls == 1


def test_the_backstop_never_collects_the_old_generation(pacer_gc):
    """CPython's own collections (the loop blocked, no steps) stay young or middle: a full one is
    the pacer's to place."""
    pacer = Pacer(every=1.0, middle_every=1)
    pacer.start()
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    pacer.step(monotonic() + 1)  # the live cycle moves to the old generation
    del a, b
    young = gc.get_stats()[0]["collections"]
    churn = [[] for _ in range(200_000)]  # many backstop collections, no step
    del churn
    assert gc.get_stats()[0]["collections"] > young
    assert gone() is not None


def test_the_last_pacer_to_stop_gives_cpython_its_thresholds_back(pacer_gc):
    """A process that outlives its servers (the tests, an embedding application) must not keep
    a backstop that never collects the old generation."""
    before = gc.get_threshold()
    first, second = Pacer(), Pacer()
    first.start()
    second.start()
    assert gc.get_threshold() == BACKSTOP
    first.stop()
    assert gc.get_threshold() == BACKSTOP, "another server still paces"
    first.stop()
    assert gc.get_threshold() == BACKSTOP, "a second stop counts once"
    second.stop()
    assert gc.get_threshold() == before


@pytest.mark.anyio
async def test_a_cancelled_run_stops_the_pacer(pacer_gc):
    import asyncio

    before = gc.get_threshold()
    pacer = Pacer(every=0.001)
    pacer.start()
    task = asyncio.ensure_future(pacer.run())
    while pacer.steps < 3:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gc.get_threshold() == before
