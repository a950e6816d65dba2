"""Idempotent ingest's memory of message ids: exact in the window, Bloom filters behind it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from router.core.dedupe import SeenIds


def test_the_window_is_exact_and_evicted_ids_are_maybe():
    ids = SeenIds(3, keep_evicted=True)
    assert [ids.seen_before("s", f"m-{i}") for i in range(5)] == [False] * 5
    assert ids.seen_before("s", "m-4") and ids.seen_before("s", "m-2")
    # m-0 and m-1 left the window: not "seen" any more, but the filters remember them
    assert ids.maybe_seen_long_ago("s", "m-0") and ids.maybe_seen_long_ago("s", "m-1")
    assert not ids.maybe_seen_long_ago("s", "m-4")  # in the window: the window answers
    assert not ids.maybe_seen_long_ago("other-shop", "m-0")


def test_without_keep_evicted_old_ids_are_forgotten():
    ids = SeenIds(2)
    for i in range(4):
        ids.seen_before("s", f"m-{i}")
    assert not ids.maybe_seen_long_ago("s", "m-0")


def test_filters_grow_geometrically():
    ids = SeenIds(10, keep_evicted=True)
    for i in range(10 + 10 + 20 + 40 + 1):
        ids.seen_before("s", str(i))
    # 71 evicted: 10 in the first filter, 20 in the second, 40 in the third, 1 in a fourth
    bits = [f.size_in_bits for f in ids._filters]
    assert len(bits) == 4 and all(b2 >= 1.9 * b1 for b1, b2 in zip(bits, bits[1:]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["pdd-1", "tb-2"]), st.integers(0, 60).map(str)), max_size=300),
       st.integers(1, 20))
def test_a_pair_seen_before_is_never_called_new(pairs, window):
    """No false negatives: every repeated pair is either in the window or a "maybe"."""
    ids = SeenIds(window, keep_evicted=True)
    seen: set[tuple[str, str]] = set()
    for shop, msg in pairs:
        if (shop, msg) in seen:
            assert ids.maybe_seen_long_ago(shop, msg) or ids.seen_before(shop, msg)
        else:
            assert not ids.seen_before(shop, msg)
        seen.add((shop, msg))
