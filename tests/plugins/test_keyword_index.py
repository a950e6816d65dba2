"""``KeywordIndex.found`` and ``values_in`` answer what ``hits`` answers, for any keywords and
text, with the small index (substring tests) and the Aho-Corasick one alike."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from plugins.skills import KeywordIndex

chars = st.sampled_from("退款快递到哪了坏aAbB急 ")
words = st.text(chars, min_size=1, max_size=3)


@given(pairs=st.lists(st.tuples(words, st.integers(0, 5)), max_size=20), text=st.text(chars, max_size=30))
def test_found_and_values_in_agree_with_hits(pairs, text):
    index = KeywordIndex(pairs)
    assert (index._ac is not None) == (len(index.words) > KeywordIndex.SMALL)
    hits = index.hits(text)
    assert index.found(text) is bool(hits)
    assert index.values_in(text) == {index.values[n] for n in hits}
