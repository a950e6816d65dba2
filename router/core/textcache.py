"""Bounded caches of exact message texts for plugins' pure per-text steps.

Real traffic repeats 在吗, 发货了吗 and 谢谢 all day; a dictionary lookup is far cheaper than each
plugin's scan of them. Kept beside the plugin machinery (and re-exported by
:mod:`router.core.plugins`) so the metrics can read every cache's hits and misses.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Entries per exact-text cache, and the longest text cached (longer ones rarely repeat, and
#: would make the bound on memory 10,000 characters × entries).
TEXT_CACHE_SIZE = 4096
TEXT_CACHE_MAX_CHARS = 200
_text_caches: dict[str, weakref.WeakSet[Any]] = {}


def text_cache(fn: Callable[[str], T], name: str, size: int = TEXT_CACHE_SIZE) -> Callable[[str], T]:
    """``fn`` (a pure function of a message's text, built once per configuration) behind a
    bounded LRU cache of exact texts: real traffic repeats 在吗, 发货了吗 and 谢谢 all day, and each
    plugin's scan of them costs far more than a dictionary lookup. ``fn``'s results are shared
    between callers, so they must be immutable. Hits and misses add up per ``name`` in
    :func:`text_cache_stats`; a cache goes away with the configuration that built it."""
    cached = functools.lru_cache(maxsize=size)(fn)
    _text_caches.setdefault(name, weakref.WeakSet()).add(cached)
    limit = TEXT_CACHE_MAX_CHARS

    def lookup(text: str) -> T:
        return cached(text) if len(text) <= limit else fn(text)

    lookup.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return lookup


def clear_text_caches() -> None:
    """Empty every exact-text cache (tests that switch an implementation, such as the sensitive
    filter's C fold, under a live configuration)."""
    for caches in _text_caches.values():
        for c in list(caches):
            c.cache_clear()


def text_cache_stats() -> dict[str, tuple[int, int, int]]:
    """``name → (hits, misses, entries)`` over the live exact-text caches, for metrics and the
    benchmarks' hit rates."""
    out = {}
    for name, caches in sorted(_text_caches.items()):
        infos = [c.cache_info() for c in list(caches)]
        out[name] = (sum(i.hits for i in infos), sum(i.misses for i in infos), sum(i.currsize for i in infos))
    return out
