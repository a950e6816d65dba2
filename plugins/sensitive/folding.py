"""The character fold: one table, built once per process, that maps every character to the one
it stands for (full-width → half-width, lower case, letter and digit forms, traditional →
simplified, Chinese numerals → digits) or deletes it (separators), and the views derived from it
(normalised text, repeats collapsed, positions back in the original text).

Every normalisation is one character to at most one character, so each position of the
normalised text points back to one original character. The table is applied by the C extension
``plugins._fold`` when it was built (≈1 ns a character); without it ``str.translate`` costs ≈30 ns
a character, so the pure-Python path (see :meth:`Matcher.scan_counts`) avoids it when it can.
"""

from __future__ import annotations

import os
import re
import time
import unicodedata
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate
from unicodedata import is_normalized

import structlog

try:
    from plugins._fold import Folder
except ImportError:  # built without a C compiler: the pure-Python path does the same work
    Folder = None

log = structlog.get_logger("fenliu.sensitive")

#: Characters removed up front with ``str.replace``: the punctuation of nearly every chat message.
EAGER = ("，", "。", "？", "！", "、", "～")
#: Chinese numerals, folded to ASCII digits everywhere (下三滥 meets 下3滥, 一三八… is a phone
#: number). 幺 is how 1 is read out in phone numbers; traditional forms reach these through t2s.
CN_DIGITS = "零〇一二三四五六七八九幺壹贰叁肆伍陆柒捌玖"
_CN_VALUES = "001234567891123456789"
_TABLE_SIZE = 0x20000
_RANGES = ((0, 0x3400), (0x4DC0, 0x4E00), (0xA000, 0xAC00), (0xD7A4, 0xD800), (0xE000, 0x10000),
           (0x10000, 0x11000), (0x1D400, 0x1D800), (0x1F000, 0x1FB00))
_CJK = ((0x3400, 0x4DC0), (0x4E00, 0xA000))
#: A Latin letter by its Unicode name, for the forms without a decomposition: 🅐 NEGATIVE CIRCLED
#: LATIN CAPITAL LETTER A, 🅰 NEGATIVE SQUARED …, ᴀ LATIN LETTER SMALL CAPITAL A.
_LATIN_NAME = re.compile(r"LATIN (?:CAPITAL |SMALL )?LETTER (?:SMALL CAPITAL )?([A-Z])$")
#: Two equal characters in a row (any, or digits) and runs of them, for the pure-Python collapse.
_ADJACENT = re.compile(r"(.)\1", re.S)
_ADJACENT_DIGITS = re.compile(r"(\d)\1")
_RUNS = re.compile(r"(.)\1+", re.S)


def _is_separator(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] in "PSZ" or cat in ("Cc", "Cf", "Mn", "Me")


def _fold_char(c: str) -> str | None:
    """What one character of the Unicode ranges folds to: itself, one other character, or
    ``None`` (deleted). All from the Unicode data: numeric values, NFKC, names, NFKD."""
    cat = unicodedata.category(c)
    if cat[0] == "N" and not c.isascii():
        value = unicodedata.numeric(c, -1.0)
        if value in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9):  # ❶ ➀ ➊ ⓵ ⓿ Ⅳ ٣ １: one digit
            return str(int(value))
    name = unicodedata.name(c, "")
    if _is_separator(c):
        if cat != "So" or not ("LATIN" in name or "DIGIT" in name):
            return None
        # Ⓐ ⓐ ⒜ 🄐 🅐 🅰: symbols that are letters in disguise; ℃ and ㎏ stay symbols.
        n = "".join(ch for ch in unicodedata.normalize("NFKC", c).lower() if not _is_separator(ch))
        if len(n) == 1 and n.isascii() and n.isalnum():
            return n
        m = _LATIN_NAME.search(name)
        return m.group(1).lower() if m else None
    n = "".join(ch for ch in unicodedata.normalize("NFKC", c).lower() if not _is_separator(ch))
    if len(n) == 1:
        c2 = n
    elif not n and not c.isalnum():
        return None
    else:
        c2 = c.lower() if len(c.lower()) == 1 else c
    if not c2.isascii() and cat[0] == "L":
        # wēixìn → weixin, ᴀ → a: a Latin letter with marks, or named after one.
        base = "".join(ch for ch in unicodedata.normalize("NFKD", c2) if not unicodedata.combining(ch))
        if len(base) == 1 and base.isascii() and base.isalpha():
            return base.lower()
        m = _LATIN_NAME.search(unicodedata.name(c2, ""))
        if m:
            return m.group(1).lower()
    return c2


class Normaliser:
    """The character table (built once per process) and the derived sets.

    ``table`` is a list indexed by code point for ``str.translate`` (a list, not a dict: a miss
    in a dict raises ``LookupError`` inside ``translate``, which doubles its cost). ``deleted``
    are the separators (punctuation, symbols, emoji, spaces, zero-width and combining marks).
    """

    def __init__(self) -> None:
        import opencc

        table: list[int | None] = list(range(_TABLE_SIZE))
        for lo, hi in _RANGES:
            for cp in range(lo, hi):
                v = _fold_char(chr(cp))
                table[cp] = None if v is None else ord(v)
        cc = opencc.OpenCC("t2s")
        for lo, hi in _CJK:
            block = "".join(map(chr, range(lo, hi)))
            out = cc.convert("\n".join(block)).split("\n")
            if len(out) != len(block):
                out = [cc.convert(c) for c in block]
            for c, s in zip(block, out, strict=True):
                if len(s) == 1 and s != c:
                    table[ord(c)] = ord(s)
        for c, v in zip(CN_DIGITS, _CN_VALUES, strict=True):
            table[ord(c)] = ord(v)
        for cp in range(_TABLE_SIZE):
            v = table[cp]
            for _ in range(3):
                if v is None or v >= _TABLE_SIZE or table[v] == v:
                    break
                v = table[v]
            table[cp] = v
        self.table = table
        self.deleted = frozenset(chr(cp) for cp, v in enumerate(table) if v is None)
        #: Characters that fold to an ASCII letter or digit, CJK numerals excepted: what makes a
        #: neighbour part of the same word for the ASCII sides of entries (see plugins.sensitive.filter).
        self.boundary = frozenset(chr(cp) for cp, v in enumerate(table)
                                  if v is not None and v < 128 and chr(v).isalnum()
                                  and unicodedata.category(chr(cp)) != "Lo")
        #: What the table changes that ``isalnum``/``is_normalized`` cannot see: traditional
        #: characters, non-ASCII capitals, digit and letter forms. The automaton holds them, so
        #: the word scan reports them (ASCII capitals are cheaper to catch with ``bytes.lower``,
        #: Chinese numerals with ``str.replace``).
        self.letters = [chr(cp) for cp, v in enumerate(table)
                        if v != cp and cp >= 128 and not 0xD800 <= cp < 0xE000 and chr(cp).isalnum()
                        and is_normalized("NFKC", chr(cp)) and chr(cp) not in CN_DIGITS]
        self.cn_digits = tuple((c, chr(table[ord(c)])) for c in CN_DIGITS)  # type: ignore[arg-type]
        self.upper = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        #: Runs of separators of the Basic Multilingual Plane (surrogates excluded), for :meth:`locator`.
        self.runs = re.compile(f"([{_char_class(cp for cp, v in enumerate(table) if v is None and cp < 0x10000)}]+)")
        assert all(c in self.deleted for c in EAGER)
        #: ``fold(text, collapse) -> (normalised, words, ascii, digits, ascii in text, digits in
        #: text, longest digit run)``, ``words(text)`` and ``spans(text)`` in C, or ``None`` (no compiler at install
        #: time, or ``FENLIU_PURE_PYTHON=1``): see :meth:`Matcher.scan_counts`.
        self.fold: Callable[[str, bool], tuple[str, str, int, int, int, int, int]] | None = None
        self.fold_spans: Callable[[str, bool], bytes] | None = None
        if Folder is not None and not os.environ.get("FENLIU_PURE_PYTHON"):
            folder = Folder(array("i", (-1 if v is None else v for v in table)))
            self.fold, self.fold_spans = folder.fold, folder.spans

    def normalise(self, text: str) -> str:
        """The normalised form (what patterns, and words of directions without collapsing, see)."""
        return text.translate(self.table)

    def words(self, text: str, n: str | None = None) -> str:
        """The normalised form with repeats collapsed: a character is dropped when its fold
        equals the fold of the character kept before it, unless it was typed as a decimal digit
        (``fffuuuck`` → ``fuck``, ``五五星`` → ``5星``, but ``699`` stays). ``n``: the text's
        normalised form, if known."""
        if n is None:
            n = self.normalise(text)
        if _ADJACENT.search(n) is None:
            return n
        if _ADJACENT_DIGITS.search(n) is None:  # no repeated digit: no typed digit to keep apart
            return _RUNS.sub(r"\1", n)
        return "".join(text[i] for i in self.flat_spans(text)[::3]).translate(self.table)

    def word_spans(self, text: str) -> list[tuple[int, int, int]]:
        """For each character of :meth:`words`, the first and last index in ``text`` of the
        characters it stands for (a run of repeats, separators between them included) and how
        many they are."""
        flat = memoryview(self.fold_spans(text, True)).cast("i") if self.fold_spans is not None else self._spans(text)
        return [(flat[k], flat[k + 1], flat[k + 2]) for k in range(0, len(flat), 3)]

    def flat_spans(self, text: str, n: str | None = None) -> Sequence[int]:
        """:meth:`word_spans` as one flat sequence ``first, last, count, first, …``: in C when
        built; else, when no repeat is a digit, worked out on demand from the runs of the
        normalised text ``n`` (:class:`_RunMap`); else a Python loop (≈ 0.1 µs a character)."""
        if self.fold_spans is not None:
            return memoryview(self.fold_spans(text, True)).cast("i")
        if n is None:
            n = self.normalise(text)
        if _ADJACENT_DIGITS.search(n) is None:
            return _RunMap(n, self.locator(text, len(n)))  # type: ignore[return-value]
        return self._spans(text)

    def _spans(self, text: str) -> list[int]:
        table, size, spans = self.table, len(self.table), []
        last: int | None = -1
        for i, c in enumerate(text):
            cp = ord(c)
            v = table[cp] if cp < size else cp
            if v is None:
                continue
            if v == last and not c.isdecimal():
                spans[-2] = i
                spans[-1] += 1
                continue
            last = v
            spans += (i, i, 1)
        return spans

    def positions(self, text: str) -> list[int]:
        """``positions[j]`` is the index in ``text`` of the ``j``-th normalised character
        (the reference for :meth:`locator`, and its fallback)."""
        deleted = self.deleted
        return [i for i, c in enumerate(text) if c not in deleted]

    def locator(self, text: str, length: int) -> Callable[[int], int]:
        """``j -> positions(text)[j]`` for a text whose normalised form has ``length``
        characters, computed per run of separators rather than per character.

        One ``split`` on the separator runs (a regex over the Basic Multilingual Plane, where sre
        tests a character with one bitmap lookup) gives the kept pieces; a normalised index is
        found among the pieces' offsets with ``bisect``. Separators beyond the BMP (emoji) are not
        in the class; they show as a length that does not add up and the per-character map is
        used instead."""
        if length == len(text):
            return _same
        pieces = self.runs.split(text)
        kept = pieces[::2]
        offsets = list(accumulate(map(len, kept), initial=0))
        if offsets[-1] != length:
            return self.positions(text).__getitem__
        starts = list(accumulate(map(len, pieces), initial=0))[::2]

        def position(j: int) -> int:
            i = bisect_right(offsets, j) - 1
            return starts[i] + j - offsets[i]

        return position


def _same(j: int) -> int:
    return j


class _RunMap:
    """:meth:`Normaliser.flat_spans` of a text whose normalised form ``n`` repeats no digit
    (then every run of equal characters collapses): one regex finds the runs, an index is
    worked out with ``bisect`` when asked for (the pure-Python path's run map)."""

    __slots__ = ("locate", "starts", "runs", "dropped", "size")

    def __init__(self, n: str, locate: Callable[[int], int]) -> None:
        self.locate = locate
        self.size = 0
        self.starts: list[int] = []  # where each run of two or more starts in the collapsed text
        self.runs: list[tuple[int, int]] = []  # and where it is in n
        self.dropped = [0]  # characters dropped by the runs before run k
        for mo in _RUNS.finditer(n):
            a, b = mo.span()
            self.starts.append(a - self.dropped[-1])
            self.runs.append((a, b))
            self.dropped.append(self.dropped[-1] + b - a - 1)
        self.size = 3 * (len(n) - self.dropped[-1])

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < self.size:
            raise IndexError(i)
        j, field = divmod(i, 3)
        k = bisect_right(self.starts, j) - 1
        if k >= 0 and self.starts[k] == j:
            a, b = self.runs[k]
        else:
            a = j + self.dropped[k + 1]
            b = a + 1
        return (self.locate(a), self.locate(b - 1), b - a)[field]


def _char_class(cps: Iterable[int]) -> str:
    """The body of a regex character class holding the code points ``cps``, as ranges."""
    ranges: list[list[int]] = []
    for cp in sorted(cps):
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in ranges)


_normaliser: Normaliser | None = None


def normaliser() -> Normaliser:
    """The process's one table, built on first use (≈0.4 s: every matcher and the tests share it)."""
    global _normaliser
    if _normaliser is None:
        start = time.perf_counter()
        _normaliser = Normaliser()
        log.debug("sensitive_table_built", ms=round((time.perf_counter() - start) * 1000, 1),
                  letters=len(_normaliser.letters))
    return _normaliser


def normalise(text: str) -> str:
    """Normalise ``text`` as the filter does before matching (for tests and tools)."""
    return normaliser().normalise(text)


def normalise_words(text: str) -> str:
    """:func:`normalise` with repeats collapsed, as the word scan of a collapsing direction sees it."""
    return normaliser().words(text)
