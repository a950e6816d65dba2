"""A policy's compiled ``[sensitive]`` section at work: the hits in a text, where they are in
the text as typed, and the verdict (block, mask or flag) of a direction.

Hits are reported (and masked) in the original text, separators between the matched characters
included. Words typed as listed are located with ``str.find``; the position map is built only
for evasions (see :meth:`SensitiveFilter._report`). Entries are matched as substrings, except
that an entry side that is an ASCII letter or digit (``av``, ``69``, the ``V`` of ``加V``) needs a
word boundary there: the neighbouring character of the original text must not fold to an ASCII
letter or digit (so ``av`` does not hit ``have``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from plugins.sensitive.folding import normaliser
from plugins.sensitive.matcher import NOTHING, Matcher
from plugins.sensitive.rules import Rule
from router.core.models import FilterVerdict, Hit
from router.core.textcache import text_cache

if TYPE_CHECKING:
    from plugins.sensitive.config import Direction

#: A hit before it becomes a ``Hit``: ``(start, -end, order, word, source, group, tag, advice)``;
#: ``group`` is the list for words and ``""`` for every pattern (a URL inside an e-mail address
#: is part of it).
_Row = tuple[int, int, int, str, str, str, str, str]


class SensitiveFilter:
    """A policy's compiled ``[sensitive]`` section: a (shared) matcher per direction, actions
    per list and pattern, the compiled patterns, per-word mask texts and the warnings about the
    lists."""

    def __init__(self, matchers: dict[str, Matcher], actions: dict[str, tuple[str, str]],
                 rules: dict[str, list[Rule]], mask_char: str, enabled: bool = True,
                 replace: dict[tuple[str, str], str] | None = None, warnings: Sequence[str] = ()) -> None:
        self.matchers = matchers
        self.matcher = matchers["outbound"]
        self.actions = actions
        self.rules = rules["outbound"]
        self._rules = rules
        self.mask_char = mask_char
        self.enabled = enabled
        self.replace = replace or {}
        self.warnings = tuple(warnings)
        self.pattern_names = frozenset(r.name for r in self.rules)
        #: Per direction: the matcher, the normalised-view rules (all, and those that may run on a text in
        #: which no ``requires`` string was found), the original-view rules, and every string
        #: of the original-view rules' ``requires`` (``None``: a rule has none), so a text none
        #: of them can match costs a few ``in`` tests (a regex search costs 5x more).
        #: The last item: the smallest gates of the untriggered rules (no rule of them runs
        #: on a text below all three), checked before calling :meth:`_pattern_hits` at all.
        self._plans: dict[str, tuple[Matcher, list[Rule], list[Rule], list[Rule], tuple[str, ...] | None,
                                     tuple[int, int, int]]] = {}
        for d, rs in rules.items():
            original = [r for r in rs if r.original]
            gate = None
            if original and all(r.requires for r in original):
                gate = tuple(sorted({x for r in original for x in r.requires}))
            normal = [r for r in rs if not r.original]
            untriggered = [r for r in normal if not r.triggers]
            lows = (min((r.min_ascii for r in untriggered), default=0), min((r.min_digits for r in untriggered), default=0),
                    min((r.min_run for r in untriggered), default=0))
            self._plans[d] = (matchers[d], normal, untriggered, original, gate, lows)
        #: the inbound hook's verdicts by exact text (buyers repeat themselves; verdicts are frozen)
        self.inbound = text_cache(functools.partial(self.verdict, direction="inbound"), "sensitive")


    def hits(self, text: str, direction: Direction = "outbound") -> list[Hit]:
        """Every finding in ``text`` (any list or pattern, whatever their actions), seen as
        ``direction`` sees it (repeats collapsed or not), in text order, with positions in
        ``text``. Dropped: hits inside an allowed phrase, word hits whose ASCII side runs on
        into a longer word, hits inside a longer hit of the same list (加微信 reports 加微信,
        not also 加微 and 微信) and pattern hits inside a longer pattern hit.

        The common message (no match, or only words inside allowed phrases, no pattern worth
        running) returns after the scan, the sort of its few matches and a few C-level checks;
        the position map is built only for texts with hits."""
        if not self.enabled or not text:
            return []
        m, normal, untriggered, original, gate, lows = self._plans[direction]
        fold = m.norm.fold
        if fold is not None:
            n, w, ascii_n, digits_n, ascii_in, digits_in, run = fold(text, m.collapse)
            ms = m.ac.find_matches_as_indexes(w, overlapping=True)
        else:
            n, w, ms, ascii_n, digits_n, ascii_in, digits_in, run = m.scan_counts(text)
        if ms:
            found, allowed, triggered = m.classify(w, ms)
        else:
            found, allowed, triggered = ms, ms, NOTHING
        if triggered:
            untriggered = normal
        elif 0 <= ascii_n < lows[0] or 0 <= digits_n < lows[1] or 0 <= run < lows[2]:
            untriggered = _NO_RULES
        if original and gate is not None:
            for x in gate:
                if x in text:
                    break
            else:
                original = _NO_RULES
        pattern_hits = self._pattern_hits(text, n, ascii_n, digits_n, ascii_in, digits_in, run, triggered, untriggered,
                                          original) if untriggered or original else _NO_HITS
        if not found and not pattern_hits:
            return []
        return self._report(text, n, w, m, found, allowed, pattern_hits)

    @staticmethod
    def _pattern_hits(text: str, n: str, ascii_n: int, digits_n: int, ascii_in: int, digits_in: int, run: int,
                      triggered: frozenset[str], normal: list[Rule], original: list[Rule]
                      ) -> list[tuple[int, int, Rule]]:
        """Matches of the patterns worth running: ``(start, end, rule)``, in normalised
        positions for ``normal`` (``on = "normalised"``) rules, in ``text`` for ``original``
        ones. The ASCII gates count the text each rule runs on (``-1``: not known yet, see
        :meth:`Matcher.scan_counts`)."""
        out: list[tuple[int, int, Rule]] = []
        if normal and ascii_n < 0:
            ascii_b = n.encode("ascii", "ignore")
            ascii_n = len(ascii_b)
            digits_n = ascii_n - len(ascii_b.translate(None, b"0123456789"))
        for r in normal:
            if ascii_n < r.min_ascii or digits_n < r.min_digits or r.triggers and r.triggers.isdisjoint(triggered):
                continue
            if r.min_run > 1:
                if run < 0:
                    run = max(map(len, _DIGIT_RUNS.findall(n)), default=0)
                if run < r.min_run:
                    continue
            for mo in r.regex.finditer(n):
                a, b = mo.span()
                if b > a:
                    out.append((a, b, r))
        if original and ascii_in < 0:
            ascii_b = text.encode("ascii", "ignore")
            ascii_in = len(ascii_b)
            digits_in = ascii_in - len(ascii_b.translate(None, b"0123456789"))
        for r in original:
            if ascii_in < r.min_ascii or digits_in < r.min_digits:
                continue
            if r.requires:
                for x in r.requires:
                    if x in text:
                        break
                else:
                    continue
            for mo in r.regex.finditer(text):
                a, b = mo.span()
                if b > a:
                    out.append((a, b, r))
        return out

    def _report(self, text: str, n: str, w: str, m: Matcher, found: list[tuple[int, int, int]],
                allowed: list[tuple[int, int, int]], pattern_hits: list[tuple[int, int, Rule]]) -> list[Hit]:
        """The hits in ``text``'s positions, in text order (longer first), without the hits
        that a longer hit of the same group contains and the word hits that run on into a
        longer ASCII word.

        A word's normalised characters are fixed points of the table, so each literal occurrence
        of it in ``text`` is one of its occurrences in the normalised text, in the same order.
        When ``text`` has as many literal occurrences as the normalised text has occurrences (the
        word was typed as listed, the usual case), the k-th is the k-th and ``str.find`` gives
        the position. Any other hit goes through the position map, built once on first need; in
        a collapsed view (``w`` is not ``n``) through the run map, a hit covering whole runs.
        With the C fold, its run map (one pass) serves every word hit instead."""
        norm = normaliser()
        locate: Callable[[int], int] | None = None
        spans: Sequence[int] | None = None
        owners, boundary = m.owners, norm.boundary
        rows: list[_Row] = []
        if norm.fold_spans is not None and found:  # one C pass maps every position
            spans = memoryview(norm.fold_spans(text, w is not n)).cast("i")

        def span(a: int, b: int) -> tuple[int, int]:
            """``[a, b)`` of the scanned text ``w`` in ``text``."""
            nonlocal locate, spans
            if spans is None and w is not n:
                spans = norm.flat_spans(text, n)
            if spans is not None:
                return spans[3 * a], spans[3 * b - 2] + 1
            locate = locate or norm.locator(text, len(n))
            return locate(a), locate(b - 1) + 1

        for idx, a, b in found:
            key = w[a:b]
            if spans is not None or w is not n:
                start, end = span(a, b)
            elif (start := text.find(key)) >= 0 and n.find(key) == a and n.find(key, a + 1) < 0:
                end = start + b - a
            elif len(spots := _find_all(n, key)) == len(typed := _find_all(text, key)):
                start = typed[spots.index(a)]
                end = start + b - a
            else:
                start, end = span(a, b)
            for word, source, tag, advice, left, right, runs in owners[idx]:
                if not (left or right or runs):
                    rows.append((start, -end, len(rows), word, source, source, tag, advice))
                    continue
                if left and start and text[start - 1] in boundary or right and end < len(text) and text[end] in boundary:
                    continue
                if runs is not None:  # QQ: the text must repeat the q (all runs are 1 when w is n)
                    if w is n:
                        continue
                    if spans is None:
                        spans = norm.flat_spans(text, n)
                    if any(spans[3 * (a + k) + 2] < r for k, r in enumerate(runs)):
                        continue
                rows.append((start, -end, len(rows), word, source, source, tag, advice))
        if pattern_hits:
            held = [span(s, e) for _, s, e in allowed]
            for a, b, r in pattern_hits:
                if not r.original:
                    locate = locate or norm.locator(text, len(n))
                    a, b = locate(a), locate(b - 1) + 1
                if any(s <= a and b <= e for s, e in held):
                    continue
                rows.append((a, -b, len(rows), text[a:b], r.name, "", r.tag, r.advice))
        if len(rows) > 1:
            rows.sort()
            rows = _outermost(rows)
        return [Hit(word, start, -neg_end, source, tag, advice)
                for start, neg_end, _, word, source, _, tag, advice in rows]

    def action(self, hit: Hit, direction: Direction) -> str:
        inbound, outbound = self.actions.get(hit.source, ("off", "off"))
        return inbound if direction == "inbound" else outbound

    def check(self, text: str, direction: Direction = "outbound") -> list[Hit]:
        """The hits that matter in ``direction`` (lists and patterns not ``off`` there)."""
        return [h for h in self.hits(text, direction) if self.action(h, direction) != "off"]

    def mask(self, text: str, hits: Iterable[Hit]) -> str:
        """``text`` with every character of each hit (separators inside included) masked, or
        replaced by the entry's ``replace`` text when one hit alone covers the span."""
        groups: list[list] = []  # [start, end, replacement or None]
        for h in sorted(hits, key=lambda h: (h.start, -h.end)):
            rep = self.replace.get((h.word, h.source))
            if groups and h.start < groups[-1][1]:
                g = groups[-1]
                if h.end > g[1] or rep != g[2] or h.start != g[0]:
                    g[1], g[2] = max(g[1], h.end), None
                continue
            groups.append([h.start, h.end, rep])
        out, i = [], 0
        for start, end, rep in groups:
            out.append(text[i:start])
            out.append(rep if rep is not None else self.mask_char * (end - start))
            i = end
        out.append(text[i:])
        return "".join(out)

    def verdict(self, text: str, direction: Direction) -> FilterVerdict | None:
        """The hook's answer. Flags are ``sensitive:微信`` for a listed word and
        ``sensitive:phone`` for a pattern (never the buyer's number itself)."""
        hits = self.check(text, direction)
        if not hits:
            return None
        names = self.pattern_names
        flags = tuple(dict.fromkeys(f"sensitive:{h.source if h.source in names else h.word}" for h in hits))
        acts = [self.action(h, direction) for h in hits]
        if "block" in acts:
            words = dict.fromkeys(h.word if h.source not in names else f"{h.source}({h.word})"
                                  for h, a in zip(hits, acts, strict=True) if a == "block")
            label = "敏感词" if direction == "inbound" else "违禁词"
            return FilterVerdict("block", None, flags, f"{label}: {'、'.join(words)}", tuple(hits))
        if "mask" in acts:
            masked = self.mask(text, (h for h, a in zip(hits, acts, strict=True) if a == "mask"))
            return FilterVerdict("mask", masked, flags, None, tuple(hits))
        return FilterVerdict("flag", None, flags, None, tuple(hits))


_NO_RULES: list[Rule] = []
_DIGIT_RUNS = re.compile("[0-9]+")
_NO_HITS: list[tuple[int, int, Rule]] = []


def _find_all(text: str, part: str) -> list[int]:
    """Where ``part`` starts in ``text``, overlapping occurrences included."""
    out = []
    i = text.find(part)
    while i >= 0:
        out.append(i)
        i = text.find(part, i + 1)
    return out


def _outermost(rows: list[_Row]) -> list[_Row]:
    """``rows`` (sorted by ``(start, -end)``) without those that a row of the same group with
    another span contains. A container sorts before what it contains."""
    kept: list[_Row] = []
    for row in rows:
        start, neg_end, _, _, _, group, _, _ = row
        for k in kept:
            if (k[5] == group and k[0] <= start and k[1] <= neg_end
                    and (k[0] != start or k[1] != neg_end)):
                break
        else:
            kept.append(row)
    return kept
