"""The word scan: one ahocorasick-rs automaton over a set of word lists, allow phrases and
pattern triggers, for one view of the text (repeats collapsed or not), and the split of its
matches into words, allowed phrases and triggers.

Without the C fold the table costs more than the scan itself, so :meth:`Matcher.scan_counts`
applies it only when cheap C-level checks say the text needs it; the automaton also holds the
characters the table changes, so the word scan itself says whether one is present. After the
scan, matches are split by kind with ``bisect`` and the allow-list is a set difference.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING
from unicodedata import is_normalized

import ahocorasick_rs

from plugins.sensitive.folding import CN_DIGITS, EAGER, normaliser

if TYPE_CHECKING:
    from plugins.sensitive.entries import Entry

_NON_ALNUM = re.compile(r"[\W_]")
_ASCII_ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CN_DIGIT = re.compile(f"[{CN_DIGITS}]")
#: No trigger found (a shared constant: most texts have none).
NOTHING: frozenset[str] = frozenset()

#: Who listed an automaton entry: ``(word as listed, list, tag, advice, left, right, runs)``,
#: where ``left``/``right`` say that side of the word is an ASCII letter or digit and needs a word
#: boundary in the text, and ``runs`` (collapsing view only, for a word with a repeat of its own
#: such as QQ or 扣扣) how many of each character the text must repeat at least: QQ hits ``qqq``
#: but not every ``q``.
Owner = tuple[str, str, str, str, bool, bool, tuple[int, ...] | None]


class Matcher:
    """One automaton over a set of word lists and allow phrases, for one view of the text
    (``collapse``: repeats collapsed, see :meth:`Normaliser.words`).

    Pattern order: words, allow phrases, the ``requires`` strings of normalised-view patterns
    (so the scan says for free which regexes are worth running), then every character the table
    changes that the pure-Python path cannot see otherwise (see :meth:`scan_counts`).
    """

    def __init__(self, lists: Sequence[tuple[str, Iterable[Entry]]], allow: Iterable[str],
                 triggers: Iterable[str] = (), collapse: bool = False, like: Matcher | None = None) -> None:
        norm = self.norm = normaliser()  # held: the scan reads its fold on every text
        self.collapse = collapse
        key = norm.words if collapse else norm.normalise
        index: dict[str, int] = {}
        self.owners: list[list[Owner]] = []
        boundary, deleted = norm.boundary, norm.deleted
        for source, entries in lists:
            for word, tag, advice, _ in entries:
                k = key(word)
                if not k:
                    continue  # read_lists warns about these
                if k not in index:
                    index[k] = len(self.owners)
                    self.owners.append([])
                kept = [c for c in word if c not in deleted]
                runs = None
                if collapse and len(k) < len(norm.normalise(word)):
                    runs = tuple(c for _, _, c in norm.word_spans(word))
                owner = (word, source, tag, advice, kept[0] in boundary, kept[-1] in boundary, runs)
                if owner not in self.owners[index[k]]:
                    self.owners[index[k]].append(owner)
        patterns = list(index)
        self.n_words = len(patterns)
        for phrase in dict.fromkeys(key(a) for a in allow):
            if phrase:
                patterns.append(phrase)
        self.n_allow = len(patterns)
        # Triggers are only hints (a regex runs when one is found), so both views use the
        # collapsed form (qq → q): found in every text where the full form is, and the two
        # views keep sharing one automaton.
        self.triggers = [t for t in dict.fromkeys(norm.words(x) for x in triggers) if t]
        patterns.extend(self.triggers)
        self.n_triggers = len(patterns)
        #: What the automaton is built from: a matcher for the other view with the same keys
        #: (no word, phrase or trigger holds a repeat) shares the automaton.
        self.keys = tuple(patterns)
        self.words = len(index)
        self._allow_key, self._trigger_key, self._letter_key = (self.n_words,), (self.n_allow,), (self.n_triggers,)
        if like is not None and like.keys == self.keys:
            self.ac, self.covers = like.ac, like.covers
            return
        patterns.extend(norm.letters)
        self.ac = ahocorasick_rs.AhoCorasick(patterns, implementation=ahocorasick_rs.Implementation.DFA)
        #: For each allow phrase, the word matches inside it as ``(word, start, end)`` relative
        #: to the phrase: a word match lies inside an allowed match exactly when it is one of
        #: these, shifted by the allowed match's start (a set difference instead of a loop).
        self.covers = [tuple(m for m in self.ac.find_matches_as_indexes(phrase, overlapping=True) if m[0] < self.n_words)
                       for phrase in patterns[self.n_words:self.n_allow]]

    def scan(self, text: str) -> tuple[str, list[tuple[int, int, int]]]:
        """The text the automaton scanned (normalised; repeats collapsed if ``collapse``) and
        the automaton's matches in it."""
        _, w, ms, *_ = self.scan_counts(text)
        return w, ms

    def scan_counts(self, text: str) -> tuple[str, str, list[tuple[int, int, int]], int, int, int, int, int]:
        """``(normalised, scanned, matches, ascii, digits, ascii_in, digits_in, run)``: the
        normalised text, the text scanned (the normalised text itself unless repeats were
        collapsed), the matches, how many ASCII characters and ASCII digits the normalised text
        and ``text`` hold and the longest run of digits in the normalised text (what the pattern
        gates count), each ``-1`` when not known for free.

        With the C fold (``plugins._fold``) this is one pass over the text and one scan (two
        passes when repeats are collapsed). Otherwise cheapest checks first: common punctuation
        goes with ``str.replace``, and so do Chinese numerals; the ASCII part (``encode("ascii",
        "ignore")``, a C loop) shows ASCII symbols and capitals; ``isalnum`` and ``is_normalized``
        (C loops that stop early) prove there is nothing else to remove or fold; the scan itself
        reports other characters the table changes. Only a text that fails a check pays for the
        ≈30 ns/char ``str.translate``, and only then is scanned twice.
        """
        norm = self.norm
        if norm.fold is not None:  # SensitiveFilter.hits inlines this
            t, w, ascii_n, digits_n, ascii_in, digits_in, run = norm.fold(text, self.collapse)
            return t, w, self.ac.find_matches_as_indexes(w, overlapping=True), ascii_n, digits_n, ascii_in, digits_in, run
        t = text
        for c in EAGER:
            if c in t:
                t = t.replace(c, "")
        if _CN_DIGIT.search(t):
            for c, d in norm.cn_digits:
                if c in t:
                    t = t.replace(c, d)
        b: bytes | None = t.encode("ascii", "ignore")
        upper = b != b.lower()
        if not t.isalnum() and t:
            if b and (seps := b.translate(None, _ASCII_ALNUM)):
                for c in set(seps.decode()):
                    t = t.replace(c, "")
                b = b.translate(None, seps)
            if not t.isalnum() and t:
                found = set(_NON_ALNUM.findall(t))
                if found <= norm.deleted:
                    for c in found:
                        t = t.replace(c, "")
                else:
                    t, b = text.translate(norm.table), None
        if not is_normalized("NFKC", t):
            t, b = text.translate(norm.table), None
        elif upper:
            # An NFKC-normalised character never lowers to ASCII (only the Kelvin sign would),
            # so ``b`` still holds the ASCII characters.
            lower = t.lower()
            t, b = (lower, b) if len(lower) == len(t) else (text.translate(norm.table), None)
        ac = self.ac
        ms = ac.find_matches_as_indexes(t, overlapping=True)
        if ms and max(ms)[0] >= self.n_triggers:
            t, b = text.translate(norm.table), None
            ms = ac.find_matches_as_indexes(t, overlapping=True)
        w = t
        if self.collapse:
            w = norm.words(text, t)
            if w is not t:
                ms = ac.find_matches_as_indexes(w, overlapping=True)
        if b is None:
            return t, w, ms, -1, -1, -1, -1, -1
        return t, w, ms, len(b), len(b) - len(b.translate(None, b"0123456789")), -1, -1, -1

    def classify(self, w: str, ms: list[tuple[int, int, int]]
                 ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]], frozenset[str]]:
        """Split the matches of :meth:`scan` in ``w`` (sorted in place, by pattern index) into
        word matches outside allowed phrases, allowed matches and the trigger strings found. The
        pattern order makes each kind one slice, found by bisection."""
        ms.sort()
        if ms[-1][0] < self.n_words:
            return ms, [], NOTHING
        w_end = bisect_left(ms, self._allow_key)
        a = bisect_left(ms, self._trigger_key, w_end)
        found, allowed = ms[:w_end], ms[w_end:a]
        if found and allowed:
            inside = set()
            for k, s, _ in allowed:
                for idx, x, y in self.covers[k - self.n_words]:
                    inside.add((idx, s + x, s + y))
            found = [] if inside.issuperset(found) else [f for f in found if f not in inside]
        if a == len(ms):
            return found, allowed, NOTHING
        t = bisect_left(ms, self._letter_key, a)
        return found, allowed, frozenset(w[x:y] for _, x, y in ms[a:t]) if t > a else NOTHING
