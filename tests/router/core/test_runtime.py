"""The collector's tuning (router.core.runtime): what exists at start is frozen, and the thresholds
are the batch run's or the server's."""

from __future__ import annotations

import gc

import pytest

from router.core.runtime import FEW_PAUSES, SHORT_PAUSES, tune_gc


@pytest.fixture
def restored_gc():
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    yield
    gc.set_threshold(*thresholds)
    if not frozen:
        gc.unfreeze()


@pytest.mark.parametrize("pauses", [FEW_PAUSES, SHORT_PAUSES], ids=["batch", "server"])
def test_tune_gc_freezes_what_exists_and_sets_the_thresholds(restored_gc, pauses):
    kept = [object()]  # noqa: F841 - a list is tracked by the collector
    tune_gc(*pauses)
    assert gc.get_threshold()[:2] == pauses and gc.get_threshold()[2] >= 50
    assert gc.get_freeze_count() > 0 and gc.get_count()[0] < 100

