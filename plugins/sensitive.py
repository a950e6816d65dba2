"""Built-in plugin ``sensitive``: forbidden and sensitive words, inbound and outbound.

Buyers try to pull a chat off the platform (加我微信, ＶＸ, 微-信, 支付寶) and agents must never
answer with contact details or absolute advertising claims (最好, 第一), which platforms punish.
Word lists (``config/words/*.txt``) are matched with one ahocorasick-rs automaton per distinct
set of lists, built in ``fenliu_configure`` and swapped with the configuration on reload.

Matching runs on a *normalised* text so evasions collapse onto the listed word: NFKC (full-width
→ half-width), lower case, every letter and digit form Unicode knows (circled, bracketed,
negative-squared letters by their names; ❶ ➀ ⓵ Ⅳ and Chinese numerals by their numeric values),
separators (spaces, punctuation, symbols, emoji, zero-width characters) removed, traditional →
simplified (a character table built once from ``opencc`` t2s). Every normalisation is one
character to at most one character, so each position of the normalised text points back to one
original character and hits are reported (and masked) in the original text, separators between
the matched characters included. For the word scan of the directions that ask for it, repeated
characters are collapsed too (fffuuuck, 五五星星红红旗旗); patterns always see the text uncollapsed.

Entries are matched as substrings, except that an entry side that is an ASCII letter or digit
(``av``, ``69``, the ``V`` of ``加V``) needs a word boundary there: the neighbouring character of
the original text must not fold to an ASCII letter or digit (so ``av`` no longer hits ``have``).

Speed (see ``bench/bench_sensitive.py`` and docs/plugins/sensitive.md): the table is applied by
a small C extension, ``plugins._fold`` (≈1 ns a character, built when the package is installed
with a C compiler). Without it ``str.translate`` costs ≈30 ns a character, more than the scan
itself, so the pure-Python path runs it only when cheap C-level checks say the text needs it
(see :meth:`Matcher.scan_counts`); the automaton also holds the characters the table changes, so
the word scan itself says whether one is present. After the scan, matches are split by kind with
``bisect``, the allow-list is a set difference, and words typed as listed are located with
``str.find``; the position map is built only for evasions (see :meth:`SensitiveFilter._report`).
"""

from __future__ import annotations

import functools
import os
import re
import time
import unicodedata
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from unicodedata import is_normalized

import ahocorasick_rs
import msgspec
import structlog

from router.core.config import ConfigError, read_word_list
from router.core.hookspecs import hookimpl
from router.core.models import FilterVerdict, Hit
from router.core.plugins import text_cache

if TYPE_CHECKING:
    from router.core.config import Config
    from router.core.context import HookContext
    from router.core.models import Message, Reply

try:
    from plugins._fold import Folder
except ImportError:  # built without a C compiler: the pure-Python path does the same work
    Folder = None

log = structlog.get_logger("fenliu.sensitive")

InboundAction = Literal["mask", "flag", "block", "off"]
OutboundAction = Literal["block", "mask", "off"]
Direction = Literal["inbound", "outbound"]
Detector = Literal["phone_number", "qq_number", "wechat_id", "url", "email", "ipv4", "digits"]


# -- configuration -----------------------------------------------------------------------------


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of the ``[sensitive]`` tables: unknown keys are errors, every key has a default
    (``kw_only`` is per class in msgspec, so each table repeats it)."""


class WordList(_Table, kw_only=True):
    """One word list: ``file`` (relative to the config folder) plus optional ``extra_files``
    (homophones 威信/薇信, pinyin weixin) and inline ``words``, all reported under ``name``.

    ``tag`` is the category shown with each hit (引流, 广告法, 辱骂; default: ``name``) and counted
    by ``fenliu stats``; ``advice`` a compliant alternative the workbench offers for any word of
    the list. An entry may override both and give its own mask text: ``最好 | advice=很好``,
    ``傻逼 | tag=辱骂 | replace=[不文明用语]`` (see :func:`parse_entry`)."""

    name: str = ""
    file: str = ""
    extra_files: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    inbound: InboundAction = "flag"
    outbound: OutboundAction = "block"
    tag: str = ""
    advice: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("field name: every list needs a name (used in flags and reasons)")
        if not (self.file or self.words or self.extra_files):
            raise ValueError("field file: give a word file, extra_files or inline words")


class Pattern(_Table, kw_only=True):
    """A regular expression or a built-in ``detector`` (phone numbers, QQ numbers, WeChat ids,
    URLs, e-mail and IPv4 addresses, digit runs) with its actions.

    ``on = "normalised"`` matches the normalised text, in which separators are gone and Chinese
    and circled digits are ASCII digits (so ``1 3 8-①②③④-五六七八`` is ``13812345678``);
    ``on = "original"`` matches the text as typed (URLs need their dots and slashes).
    The normalised text is lower case already; ``ignore_case`` matters for ``original``.
    ``requires``: literal strings of which one must occur for the regex to run at all (a speed
    hint for costly regexes); a regex never runs on a text with fewer ASCII characters than any
    match needs, counted in the text it runs on (so chat without digits or Latin letters costs
    nothing here). A ``detector`` brings its own ``regex``, ``on``, ``ignore_case`` and
    ``requires``; ``length`` is the shortest run the ``digits`` detector reports (default 8).
    """

    name: str = ""
    detector: Detector | None = None
    regex: str = ""
    length: int = 0
    on: Literal["normalised", "original"] = "normalised"
    ignore_case: bool = False
    requires: tuple[str, ...] = ()
    inbound: InboundAction = "flag"
    outbound: OutboundAction = "block"
    tag: str = ""
    advice: str = ""

    def __post_init__(self) -> None:
        if self.length and self.detector != "digits":
            raise ValueError("field length: only the digits detector takes a length")
        if self.length < 0:
            raise ValueError("field length: expected a positive number of digits")
        if self.detector is not None:
            if self.regex:
                raise ValueError("field regex: give a regex or a detector, not both")
            self.name = self.name or self.detector
            self.regex, self.on, self.ignore_case, self.requires = _detector(self.detector, self.length or 8)
        if not self.name:
            raise ValueError("field name: every pattern needs a name (used in flags)")
        if not self.regex:
            raise ValueError("field regex: a pattern needs a regex or a detector")
        try:
            re.compile(self.regex)
        except re.error as exc:
            raise ValueError(f"field regex: invalid regular expression: {exc}") from None


_WECHAT = ("微信", "weixin", "wechat", "vx", "wx", "v信", "薇信", "威信")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"


def _detector(name: str, length: int) -> tuple[str, Literal["normalised", "original"], bool, tuple[str, ...]]:
    """``(regex, on, ignore_case, requires)`` of a built-in detector."""
    if name == "phone_number":
        return r"1(?<![0-9]1)[3-9][0-9]{9}(?![0-9])", "normalised", False, ()
    if name == "qq_number":
        return r"(?:qq|扣扣|企鹅)(?:号|号码)?[1-9][0-9]{4,10}(?![0-9])", "normalised", False, ("qq", "扣扣", "企鹅")
    if name == "wechat_id":
        return r"(?:微信|weixin|wechat|vx|wx|v信|薇信|威信)(?:号|id)?[a-z][a-z0-9]{5,19}", "normalised", False, _WECHAT
    if name == "url":
        return (r"https?://[!-~]+|[a-z0-9][-a-z0-9.]*\.(?:com|cn|net|org|cc|top|xyz|vip|me|io|shop|link)"
                r"(?![a-z0-9])(?:[/?#][!-~]*)?", "original", True, (".", "/"))
    if name == "email":  # full-width ＠ and ．/。 as typed to dodge filters
        return (r"[a-z0-9][a-z0-9._%+-]*[@＠][a-z0-9][-a-z0-9]*(?:[.．。][-a-z0-9]+)*[.．。][a-z]{2,}(?![a-z0-9])",
                "original", True, ("@", "＠"))
    if name == "ipv4":
        return rf"(?<![0-9.]){_OCTET}(?:\.{_OCTET}){{3}}(?![0-9]|\.[0-9])", "original", False, (".",)
    assert name == "digits"
    return rf"(?<![0-9])[0-9]{{{length},}}", "normalised", False, ()


DEFAULT_PATTERNS: tuple[Pattern, ...] = (
    Pattern(detector="phone_number", inbound="mask"),
    Pattern(detector="qq_number", inbound="mask"),
    Pattern(detector="wechat_id", inbound="mask"),
    Pattern(detector="url"),
    Pattern(detector="email", inbound="mask"),
    Pattern(detector="ipv4"),
)


class SensitiveConfig(_Table, kw_only=True, dict=True):
    """The ``[sensitive]`` section of a policy file (see docs/plugins/sensitive.md)."""

    enabled: bool = True
    lists: tuple[WordList, ...] = ()
    allow: tuple[str, ...] = ()
    allow_files: tuple[str, ...] = ()
    patterns: tuple[Pattern, ...] = DEFAULT_PATTERNS
    mask_char: Annotated[str, msgspec.Meta(min_length=1, max_length=1)] = "＊"
    #: The directions whose word scan collapses repeated characters (fffuuuck → fuck). Outbound
    #: only by default: buyers' 奶奶/爸爸 would otherwise meet words of the collapsed form.
    collapse_repeats: tuple[Direction, ...] = ("outbound",)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for item in (*self.lists, *self.patterns):
            if item.name in seen:
                raise ValueError(f"field lists: the name {item.name!r} is used twice (lists and patterns share names)")
            seen.add(item.name)

    @property
    def filter(self) -> SensitiveFilter:
        """The compiled filter ``fenliu_configure`` attached (or :meth:`compile` made)."""
        f = self.__dict__.get("_filter")
        if f is None:
            raise RuntimeError("sensitive section not compiled: call compile(config_dir) or load it through load_config")
        return f

    @property
    def warnings(self) -> list[str]:
        """What ``fenliu check`` should say about the compiled lists (``file: key: reason``)."""
        f = self.__dict__.get("_filter")
        return list(f.warnings) if f is not None else []

    def compile(self, base: str | Path, file: str | Path = "sensitive", cache: dict | None = None) -> SensitiveFilter:
        """Read the word files (relative to ``base``) and build the filter; cached on the section."""
        f = SensitiveFilter.build(self, Path(base), str(file), cache if cache is not None else {})
        self.__dict__["_filter"] = f
        return f


#: One word-list entry: ``(word, tag, advice, replace)``.
Entry = tuple[str, str, str, str]
_FIELDS = ("tag", "advice", "replace")


def parse_entry(line: str) -> Entry:
    """``word | tag=… | advice=… | replace=…`` (every field optional) → ``(word, tag, advice,
    replace)``. The word lists stay one word a line, readable by any other tool that cuts at
    ``|``; ``ValueError`` says what is wrong."""
    word, *fields = (part.strip() for part in line.split("|"))
    if not word:
        raise ValueError(f"entry {line!r}: no word before '|'")
    values = dict.fromkeys(_FIELDS, "")
    for field in fields:
        key, sep, value = (x.strip() for x in field.partition("="))
        if not sep or key not in values:
            raise ValueError(f"entry {line!r}: {field!r} is not one of tag=…, advice=…, replace=…")
        values[key] = value
    return word, values["tag"], values["advice"], values["replace"]


# -- normalisation -----------------------------------------------------------------------------

#: Characters removed up front with ``str.replace``: the punctuation of nearly every chat message.
EAGER = ("，", "。", "？", "！", "、", "～")
#: Chinese numerals, folded to ASCII digits everywhere (下三滥 meets 下3滥, 一三八… is a phone
#: number). 幺 is how 1 is read out in phone numbers; traditional forms reach these through t2s.
CN_DIGITS = "零〇一二三四五六七八九幺壹贰叁肆伍陆柒捌玖"
_CN_VALUES = "001234567891123456789"
_NON_ALNUM = re.compile(r"[\W_]")
_ASCII_ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TABLE_SIZE = 0x20000
_RANGES = ((0, 0x3400), (0x4DC0, 0x4E00), (0xA000, 0xAC00), (0xD7A4, 0xD800), (0xE000, 0x10000),
           (0x10000, 0x11000), (0x1D400, 0x1D800), (0x1F000, 0x1FB00))
_CJK = ((0x3400, 0x4DC0), (0x4E00, 0xA000))
#: A Latin letter by its Unicode name, for the forms without a decomposition: 🅐 NEGATIVE CIRCLED
#: LATIN CAPITAL LETTER A, 🅰 NEGATIVE SQUARED …, ᴀ LATIN LETTER SMALL CAPITAL A.
_LATIN_NAME = re.compile(r"LATIN (?:CAPITAL |SMALL )?LETTER (?:SMALL CAPITAL )?([A-Z])$")
#: Two equal characters in a row (any, or digits) and runs of them, for the pure-Python collapse.
_ADJACENT = re.compile(r"(.)\1", re.S)
_CN_DIGIT = re.compile(f"[{CN_DIGITS}]")
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
        #: neighbour part of the same word for the ASCII sides of entries (see module doc).
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


# -- matching ----------------------------------------------------------------------------------

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
        norm = normaliser()
        self.collapse = collapse
        key = norm.words if collapse else norm.normalise
        index: dict[str, int] = {}
        self.owners: list[list[Owner]] = []
        boundary, deleted = norm.boundary, norm.deleted
        for source, entries in lists:
            for word, tag, advice, _ in entries:
                k = key(word)
                if not k:
                    continue  # SensitiveFilter.build warns about these
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
        norm = _normaliser
        assert norm is not None
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
            return ms, [], _NOTHING
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
            return found, allowed, _NOTHING
        t = bisect_left(ms, self._letter_key, a)
        return found, allowed, frozenset(w[x:y] for _, x, y in ms[a:t]) if t > a else _NOTHING


def min_ascii(regex: str, digits: bool = False, ignore_case: bool = False) -> int:
    """How many ASCII characters (``digits``: ASCII digits) any match of ``regex`` must contain;
    0 when unsure. ``ignore_case``: letters do not count (under ``re.IGNORECASE`` a ``k`` also
    matches the Kelvin sign).

    A text with fewer cannot match, so the regex is not run at all: most chat messages have no
    or few ASCII characters, and one regex search costs about as much as the whole word scan.
    """
    from re import _constants as C  # type: ignore[attr-defined]
    from re import _parser as P  # type: ignore[attr-defined]

    top = 58 if digits else 128
    bottom = 48 if digits else 0

    def counts(lo: int, hi: int) -> bool:
        if not (bottom <= lo and hi < top):
            return False
        return not ignore_case or not any(chr(c).isalpha() for c in range(lo, hi + 1))

    def within(items: list) -> bool:
        for op, av in items:
            if op is C.LITERAL and counts(av, av) or op is C.RANGE and counts(*av):
                continue
            if op is C.CATEGORY and av is C.CATEGORY_DIGIT:
                continue
            return False
        return True

    def walk(seq: Iterable) -> int:
        total = 0
        for op, av in seq:
            if op is C.LITERAL:
                total += counts(av, av)
            elif op is C.IN:
                total += within(av)
            elif op is C.SUBPATTERN:
                total += walk(av[-1])
            elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
                total += av[0] * walk(av[2])
            elif op is C.BRANCH:
                total += min(walk(b) for b in av[1])
            elif op is C.ATOMIC_GROUP:
                total += walk(av)
        return total

    try:
        return walk(P.parse(regex))
    except Exception:  # noqa: BLE001 - a private API: when in doubt, always run the regex
        return 0


def min_run(regex: str) -> int:
    """The longest run of consecutive ASCII digits every match of ``regex`` contains (11 for a
    mainland mobile number); 0 when unsure. Zero-width assertions do not break a run."""
    from re import _constants as C  # type: ignore[attr-defined]
    from re import _parser as P  # type: ignore[attr-defined]

    def digit(op: object, av: object) -> bool:
        if op is C.LITERAL:
            return 48 <= av < 58  # type: ignore[operator]
        if op is C.IN:
            return all(o is C.LITERAL and 48 <= a < 58 or o is C.RANGE and 48 <= a[0] and a[1] < 58
                       or o is C.CATEGORY and a is C.CATEGORY_DIGIT for o, a in av)  # type: ignore[attr-defined]
        return False

    try:
        best = run = 0
        for op, av in P.parse(regex):
            if digit(op, av):
                run += 1
            elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT) and len(av[2]) == 1 and digit(*av[2][0]):
                run += av[0]
            elif op in (C.ASSERT, C.ASSERT_NOT, C.AT):
                continue
            else:
                best, run = max(best, run), 0
        return max(best, run)
    except Exception:  # noqa: BLE001 - a private API: when in doubt, always run the regex
        return 0


#: Automata of the last configurations, by content: a reload (or a test building many configs)
#: with unchanged lists reuses the automaton instead of paying ≈0.2 s for a new one.
_recent: dict[tuple, Matcher] = {}


class _Rule:
    __slots__ = ("name", "regex", "original", "inbound", "outbound", "min_ascii", "min_digits", "min_run",
                 "requires", "triggers", "tag", "advice")

    def __init__(self, p: Pattern) -> None:
        self.name = p.name
        self.regex = re.compile(p.regex, re.IGNORECASE if p.ignore_case else 0)
        self.original = p.on == "original"
        self.inbound = p.inbound
        self.outbound = p.outbound
        self.min_ascii = min_ascii(p.regex, ignore_case=p.ignore_case)
        self.min_digits = min_ascii(p.regex, digits=True)
        self.min_run = min_run(p.regex)
        self.requires = p.requires
        self.tag = p.tag
        self.advice = p.advice
        #: For normalised-view patterns the automaton finds the ``requires`` strings (collapsed,
        #: see :class:`Matcher`).
        self.triggers = frozenset(normalise_words(x) for x in p.requires) if not self.original else frozenset()


#: A hit before it becomes a ``Hit``: ``(start, -end, order, word, source, group, tag, advice)``;
#: ``group`` is the list for words and ``""`` for every pattern (a URL inside an e-mail address
#: is part of it).
_Row = tuple[int, int, int, str, str, str, str, str]


class SensitiveFilter:
    """A policy's compiled ``[sensitive]`` section: a (shared) matcher per direction, actions
    per list and pattern, the compiled patterns, per-word mask texts and the warnings about the
    lists."""

    def __init__(self, matchers: dict[str, Matcher], actions: dict[str, tuple[str, str]],
                 rules: dict[str, list[_Rule]], mask_char: str, enabled: bool = True,
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
        self._plans: dict[str, tuple[Matcher, list[_Rule], list[_Rule], list[_Rule], tuple[str, ...] | None,
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

    @classmethod
    def build(cls, cfg: SensitiveConfig, base: Path, file: str, cache: dict) -> SensitiveFilter:
        lists: list[tuple[str, tuple[Entry, ...]]] = []
        actions: dict[str, tuple[str, str]] = {}
        replace: dict[tuple[str, str], str] = {}
        warnings: list[str] = []
        collapse = set(cfg.collapse_repeats)
        norm = normaliser()
        for i, wl in enumerate(cfg.lists):
            if wl.inbound == "off" and wl.outbound == "off":
                continue
            lines = [(f"sensitive.lists[{i}].words[{j}]", w) for j, w in enumerate(wl.words)]
            files = [(f"sensitive.lists[{i}].file", wl.file)] if wl.file else []
            files += [(f"sensitive.lists[{i}].extra_files[{j}]", f) for j, f in enumerate(wl.extra_files)]
            for key, name in files:
                lines += [(key, w) for w in _read(base, name, file, key)]
            entries: list[Entry] = []
            for key, line in lines:
                try:
                    word, tag, advice, rep = parse_entry(line)
                except ValueError as exc:
                    raise ConfigError(file, key, str(exc)) from None
                short = _too_short(norm, word)
                if short is not None:
                    warnings.append(f"{file}: {key}: {short}")
                    if not short.endswith("kept"):
                        continue
                entries.append((word, tag or wl.tag, advice or wl.advice, rep))
                if rep:
                    replace[(word, wl.name)] = rep
            lists.append((wl.name, tuple(entries)))
            actions[wl.name] = (wl.inbound, wl.outbound)
        allow = list(cfg.allow)
        for j, name in enumerate(cfg.allow_files):
            allow += _read(base, name, file, f"sensitive.allow_files[{j}]")
        patterns = [p for p in cfg.patterns if (p.inbound, p.outbound) != ("off", "off")]
        matchers: dict[str, Matcher] = {}
        compiled = [_Rule(p) for p in patterns]
        rules = {"inbound": compiled, "outbound": compiled}
        for direction in ("inbound", "outbound"):
            on = direction in collapse
            triggers = tuple(sorted({x for p in patterns if p.on != "original" for x in p.requires}))
            key = (tuple(lists), tuple(allow), triggers, on)
            matcher = cache.get(key) or _recent.get(key)
            if matcher is None:
                matcher = Matcher(lists, allow, triggers, collapse=on, like=next(iter(matchers.values()), None))
            cache[key] = _recent[key] = matchers[direction] = matcher
        while len(_recent) > 8:
            del _recent[next(iter(_recent))]
        for p in patterns:
            actions[p.name] = (p.inbound, p.outbound)
        return cls(matchers, actions, rules, cfg.mask_char, cfg.enabled, replace, dict.fromkeys(warnings))

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
        fold = _normaliser.fold  # type: ignore[union-attr]  # built with the matchers
        if fold is not None:
            n, w, ascii_n, digits_n, ascii_in, digits_in, run = fold(text, m.collapse)
            ms = m.ac.find_matches_as_indexes(w, overlapping=True)
        else:
            n, w, ms, ascii_n, digits_n, ascii_in, digits_in, run = m.scan_counts(text)
        if ms:
            found, allowed, triggered = m.classify(w, ms)
        else:
            found, allowed, triggered = ms, ms, _NOTHING
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
                      triggered: frozenset[str], normal: list[_Rule], original: list[_Rule]
                      ) -> list[tuple[int, int, _Rule]]:
        """Matches of the patterns worth running: ``(start, end, rule)``, in normalised
        positions for ``normal`` (``on = "normalised"``) rules, in ``text`` for ``original``
        ones. The ASCII gates count the text each rule runs on (``-1``: not known yet, see
        :meth:`Matcher.scan_counts`)."""
        out: list[tuple[int, int, _Rule]] = []
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
                allowed: list[tuple[int, int, int]], pattern_hits: list[tuple[int, int, _Rule]]) -> list[Hit]:
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


_NOTHING: frozenset[str] = frozenset()
_NO_RULES: list[_Rule] = []
_DIGIT_RUNS = re.compile("[0-9]+")
_NO_HITS: list[tuple[int, int, _Rule]] = []


def _too_short(norm: Normaliser, word: str) -> str | None:
    """Why an entry is suspicious, or ``None``: one that normalises to nothing is skipped; one
    that normalises to a single character (``b\x7f`` from a public dictionary) hits that
    character everywhere, so it is skipped unless it was written as that one character (操, a
    deliberate single-character entry). QQ and 谢谢 are fine: collapsing keeps their repeat as a
    minimum (see ``Owner``)."""
    k = norm.normalise(word)
    if len(k) >= 2:
        return None
    if not k:
        return f"entry {word!r} normalises to nothing: skipped"
    written = word.strip()
    if len(written) == 1:
        return f"entry {word!r} is a single character: it hits every {k!r}, kept"
    return f"entry {word!r} normalises to {k!r} (fewer than 2 characters, it would hit every {k!r}): skipped"


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


def _read(base: Path, name: str, file: str, key: str) -> list[str]:
    path = base / name
    try:
        return read_word_list(path)
    except FileNotFoundError:
        raise ConfigError(file, key, f"file not found: {path}") from None
    except (OSError, ValueError) as exc:  # ValueError: empty, BOM or not UTF-8 (read_word_list)
        raise ConfigError(file, key, f"cannot read {path}: {exc}") from None


def check_text(section: SensitiveConfig | SensitiveFilter, text: str,
               direction: Direction = "outbound") -> list[Hit]:
    """Check ``text`` without a router: the hits that would block or mask it in ``direction``.

    ``section`` is a compiled filter, or a policy's ``[sensitive]`` section as loaded by
    ``router.core.config.load_config`` (``config.policy_for(shop_id).sensitive``).
    """
    f = section.filter if isinstance(section, SensitiveConfig) else section
    return f.check(text, direction)


# -- hooks -------------------------------------------------------------------------------------


@hookimpl
def fenliu_policy_sections() -> Mapping[str, type[msgspec.Struct]]:
    return {"sensitive": SensitiveConfig}


@hookimpl
def fenliu_configure(config: Config) -> None:
    """Read every word file and build the automata now (one per distinct set of lists and view)."""
    start = time.perf_counter()
    cache: dict = {}
    for name, policy in config.policies.items():
        f = policy.sensitive.compile(config.dir, config.policy_file(name), cache)
        if f.warnings:  # all of them: `fenliu check`
            log.warning("sensitive_entries_suspicious", policy=name, count=len(f.warnings), first=f.warnings[0])
    log.info("sensitive_configured", policies=len(config.policies), automata=len({id(m.ac) for m in cache.values()}),
             words=sum(m.words for m in cache.values()), ms=round((time.perf_counter() - start) * 1000, 1))


@hookimpl
def fenliu_inbound_filter(message: Message, ctx: HookContext) -> FilterVerdict | None:
    if message.kind != "text":  # an image's or a card's text is a link or a payload, not words a buyer wrote
        return None
    return ctx.policy.sensitive.filter.inbound(ctx.text if ctx.text is not None else message.text)


@hookimpl
def fenliu_outbound_filter(reply: Reply, ctx: HookContext) -> FilterVerdict | None:
    return ctx.policy.sensitive.filter.verdict(reply.text, "outbound")


__all__ = [
    "DEFAULT_PATTERNS", "Matcher", "Normaliser", "Pattern", "SensitiveConfig", "SensitiveFilter",
    "WordList", "check_text", "normalise", "normalise_words", "parse_entry",
]
