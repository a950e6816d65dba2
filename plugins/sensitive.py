"""Built-in plugin ``sensitive``: forbidden and sensitive words, inbound and outbound.

Buyers try to pull a chat off the platform (加我微信, ＶＸ, 微-信, 支付寶) and agents must never
answer with contact details or absolute advertising claims (最好, 第一), which platforms punish.
Word lists (``config/words/*.txt``) are matched with one ahocorasick-rs automaton per distinct
set of lists, built in ``fenliu_configure`` and swapped with the configuration on reload.

Matching runs on a *normalised* text so evasions collapse onto the listed word: NFKC (full-width
→ half-width, circled digits), lower case, separators (spaces, punctuation, symbols, emoji,
zero-width characters) removed, traditional → simplified (a character table built once from
``opencc`` t2s). Every normalisation is one character to at most one character, so each position
of the normalised text points back to one original character and hits are reported (and masked)
in the original text, separators between the matched characters included.

Speed (see ``bench/bench_sensitive.py`` and docs/plugins/sensitive.md): the table is applied by
a small C extension, ``plugins._fold`` (≈1 ns a character, built when the package is installed
with a C compiler). Without it ``str.translate`` costs ≈30 ns a character, more than the scan
itself, so the pure-Python path runs it only when cheap C-level checks say the text needs it
(see :meth:`Matcher.scan_counts`); the automaton also holds the traditional characters, so the
word scan itself says whether one is present. After the scan, matches are split by kind with
``bisect``, the allow-list is a set difference, and words typed as listed are located with
``str.find``; the position map is built only for evasions (see :meth:`SensitiveFilter._report`).
"""

from __future__ import annotations

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

from router.config import ConfigError, read_word_list
from router.hookspecs import hookimpl
from router.models import FilterVerdict, Hit

if TYPE_CHECKING:
    from router.config import Config
    from router.context import HookContext
    from router.models import Message, Reply

try:
    from plugins._fold import Folder
except ImportError:  # built without a C compiler: the pure-Python path does the same work
    Folder = None

log = structlog.get_logger("fenliu.sensitive")

InboundAction = Literal["mask", "flag", "block", "off"]
OutboundAction = Literal["block", "mask", "off"]
Direction = Literal["inbound", "outbound"]


# -- configuration -----------------------------------------------------------------------------


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of the ``[sensitive]`` tables: unknown keys are errors, every key has a default
    (``kw_only`` is per class in msgspec, so each table repeats it)."""


class WordList(_Table, kw_only=True):
    """One word list: ``file`` (relative to the config folder) plus optional ``extra_files``
    (homophones 威信/薇信, pinyin weixin) and inline ``words``, all reported under ``name``."""

    name: str = ""
    file: str = ""
    extra_files: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    inbound: InboundAction = "flag"
    outbound: OutboundAction = "block"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("field name: every list needs a name (used in flags and reasons)")
        if not (self.file or self.words or self.extra_files):
            raise ValueError("field file: give a word file, extra_files or inline words")


class Pattern(_Table, kw_only=True):
    """A regular expression (phone numbers, QQ numbers, URLs, WeChat ids) with its actions.

    ``on = "normalised"`` matches the normalised text, in which separators are gone and Chinese
    and circled digits are ASCII digits (so ``1 3 8-①②③④-五六七八`` is ``13812345678``);
    ``on = "original"`` matches the text as typed (URLs need their dots and slashes).
    The normalised text is lower case already; ``ignore_case`` matters for ``original``.
    ``requires``: literal strings of which one must occur for the regex to run at all (a speed
    hint for costly regexes); a regex never runs on a text with fewer ASCII characters than any
    match needs (so chat without digits or Latin letters costs nothing here).
    """

    name: str = ""
    regex: str = ""
    on: Literal["normalised", "original"] = "normalised"
    ignore_case: bool = False
    requires: tuple[str, ...] = ()
    inbound: InboundAction = "flag"
    outbound: OutboundAction = "block"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("field name: every pattern needs a name (used in flags)")
        if not self.regex:
            raise ValueError("field regex: a pattern needs a regex")
        try:
            re.compile(self.regex)
        except re.error as exc:
            raise ValueError(f"field regex: invalid regular expression: {exc}") from None


DEFAULT_PATTERNS: tuple[Pattern, ...] = (
    Pattern(name="phone_number", regex=r"1(?<![0-9]1)[3-9][0-9]{9}(?![0-9])", inbound="mask"),
    Pattern(name="qq_number", regex=r"(?:qq|扣扣|企鹅)(?:号|号码)?[1-9][0-9]{4,10}(?![0-9])", inbound="mask",
            requires=("qq", "扣扣", "企鹅")),
    Pattern(name="wechat_id", regex=r"(?:微信|weixin|wechat|vx|wx|v信|薇信|威信)(?:号|id)?[a-z][a-z0-9]{5,19}",
            inbound="mask", requires=("微信", "weixin", "wechat", "vx", "wx", "v信", "薇信", "威信")),
    Pattern(name="url", on="original", ignore_case=True, requires=(".", "/"),
            regex=r"https?://[!-~]+|[a-z0-9][-a-z0-9.]*\.(?:com|cn|net|org|cc|top|xyz|vip|me|io|shop|link)(?![a-z0-9])(?:[/?#][!-~]*)?"),
)


class SensitiveConfig(_Table, kw_only=True, dict=True):
    """The ``[sensitive]`` section of a policy file (see docs/plugins/sensitive.md)."""

    enabled: bool = True
    lists: tuple[WordList, ...] = ()
    allow: tuple[str, ...] = ()
    allow_files: tuple[str, ...] = ()
    patterns: tuple[Pattern, ...] = DEFAULT_PATTERNS
    mask_char: Annotated[str, msgspec.Meta(min_length=1, max_length=1)] = "＊"

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

    def compile(self, base: str | Path, file: str | Path = "sensitive", cache: dict | None = None) -> SensitiveFilter:
        """Read the word files (relative to ``base``) and build the filter; cached on the section."""
        f = SensitiveFilter.build(self, Path(base), str(file), cache if cache is not None else {})
        self.__dict__["_filter"] = f
        return f


# -- normalisation -----------------------------------------------------------------------------

#: Characters removed up front with ``str.replace``: the punctuation of nearly every chat message.
EAGER = ("，", "。", "？", "！", "、", "～")
#: Chinese numerals for phone numbers, mapped for ``on = "normalised"`` patterns only (so that
#: 第一 and 唯一 stay words). 幺 is how 1 is read out in phone numbers.
CN_DIGITS = "零〇一二三四五六七八九幺壹贰叁肆伍陆柒捌玖"
_CN_VALUES = "001234567891123456789"
_CN_TABLE: list[int] = list(range(max(map(ord, CN_DIGITS)) + 1))
for _c, _v in zip(CN_DIGITS, _CN_VALUES, strict=True):
    _CN_TABLE[ord(_c)] = ord(_v)
_NON_ALNUM = re.compile(r"[\W_]")
_ASCII_ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TABLE_SIZE = 0x20000
_RANGES = ((0, 0x3400), (0x4DC0, 0x4E00), (0xA000, 0xAC00), (0xD7A4, 0xD800), (0xE000, 0x10000),
           (0x10000, 0x11000), (0x1D400, 0x1D800), (0x1F000, 0x1FB00))
_CJK = ((0x3400, 0x4DC0), (0x4E00, 0xA000))


def _is_separator(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] in "PSZ" or cat in ("Cc", "Cf", "Mn", "Me")


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
                c = chr(cp)
                if _is_separator(c):
                    table[cp] = None
                    continue
                n = "".join(ch for ch in unicodedata.normalize("NFKC", c).lower() if not _is_separator(ch))
                if len(n) == 1 and n != c:
                    table[cp] = ord(n)
                elif not n and not c.isalnum():
                    table[cp] = None
                elif len(c.lower()) == 1 and c.lower() != c:
                    table[cp] = ord(c.lower())
        cc = opencc.OpenCC("t2s")
        for lo, hi in _CJK:
            block = "".join(map(chr, range(lo, hi)))
            out = cc.convert("\n".join(block)).split("\n")
            if len(out) != len(block):
                out = [cc.convert(c) for c in block]
            for c, s in zip(block, out, strict=True):
                if len(s) == 1 and s != c:
                    table[ord(c)] = ord(s)
        for cp in range(_TABLE_SIZE):
            v = table[cp]
            for _ in range(3):
                if v is None or v >= _TABLE_SIZE or table[v] == v:
                    break
                v = table[v]
            table[cp] = v
        self.table = table
        self.deleted = frozenset(chr(cp) for cp, v in enumerate(table) if v is None)
        #: What the table changes that ``isalnum``/``is_normalized`` cannot see: traditional
        #: characters and non-ASCII capitals. The automaton holds them, so the word scan reports
        #: them (ASCII capitals are cheaper to catch with ``bytes.lower``).
        self.letters = [chr(cp) for cp, v in enumerate(table)
                        if v != cp and cp >= 128 and not 0xD800 <= cp < 0xE000 and chr(cp).isalnum()
                        and is_normalized("NFKC", chr(cp))]
        self.upper = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        #: Runs of separators of the Basic Multilingual Plane (surrogates excluded), for :meth:`locator`.
        self.runs = re.compile(f"([{_char_class(cp for cp, v in enumerate(table) if v is None and cp < 0x10000)}]+)")
        assert all(c in self.deleted for c in EAGER)
        #: ``fold(text) -> (normalised, ascii count, ascii digit count)`` in C, or ``None``
        #: (no compiler at install time, or ``FENLIU_PURE_PYTHON=1``): see :meth:`Matcher.scan_counts`.
        self.fold: Callable[[str], tuple[str, int, int]] | None = None
        if Folder is not None and not os.environ.get("FENLIU_PURE_PYTHON"):
            self.fold = Folder(array("i", (-1 if v is None else v for v in table))).fold

    def normalise(self, text: str) -> str:
        """The normalised form (what words, allow phrases and the scan all go through)."""
        return text.translate(self.table)

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


# -- matching ----------------------------------------------------------------------------------

class Matcher:
    """One automaton over a set of word lists and allow phrases.

    Pattern order: words, allow phrases, the ``requires`` strings of normalised-view patterns
    (so the scan says for free which regexes are worth running), digit markers (two digits in a row, at least one a
    Chinese numeral: the digit view is worth building), then every traditional or capital letter.
    """

    def __init__(self, lists: Sequence[tuple[str, Iterable[str]]], allow: Iterable[str],
                 triggers: Iterable[str] = ()) -> None:
        norm = normaliser()
        index: dict[str, int] = {}
        self.owners: list[list[tuple[str, str]]] = []
        for source, words in lists:
            for word in words:
                key = norm.normalise(word)
                if not key:
                    log.warning("sensitive_word_empty", word=word, source=source)
                    continue
                if key not in index:
                    index[key] = len(self.owners)
                    self.owners.append([])
                if (word, source) not in self.owners[index[key]]:
                    self.owners[index[key]].append((word, source))
        patterns = list(index)
        self.n_words = len(patterns)
        for phrase in dict.fromkeys(norm.normalise(a) for a in allow):
            if phrase:
                patterns.append(phrase)
        self.n_allow = len(patterns)
        self.triggers = [t for t in dict.fromkeys(norm.normalise(x) for x in triggers) if t]
        patterns.extend(self.triggers)
        self.n_triggers = len(patterns)
        digits = CN_DIGITS + "0123456789"
        patterns.extend(a + b for a in digits for b in digits if a in CN_DIGITS or b in CN_DIGITS)
        self.n_markers = len(patterns)
        patterns.extend(norm.letters)
        self.ac = ahocorasick_rs.AhoCorasick(patterns, implementation=ahocorasick_rs.Implementation.DFA)
        self.words = len(index)
        #: For each allow phrase, the word matches inside it as ``(word, start, end)`` relative
        #: to the phrase: a word match lies inside an allowed match exactly when it is one of
        #: these, shifted by the allowed match's start (a set difference instead of a loop).
        self.covers = [tuple(m for m in self.ac.find_matches_as_indexes(phrase, overlapping=True) if m[0] < self.n_words)
                       for phrase in patterns[self.n_words:self.n_allow]]
        self._allow_key, self._trigger_key, self._marker_key = (self.n_words,), (self.n_allow,), (self.n_triggers,)

    def scan(self, text: str) -> tuple[str, list[tuple[int, int, int]]]:
        """The normalised text and the automaton's matches in it."""
        n, ms, _, _ = self.scan_counts(text)
        return n, ms

    def scan_counts(self, text: str) -> tuple[str, list[tuple[int, int, int]], int, int]:
        """:meth:`scan`, plus how many ASCII characters and ASCII digits the normalised text
        holds (what the pattern gates count), each ``-1`` when not known for free.

        With the C fold (``plugins._fold``) this is one pass over the text and one scan.
        Otherwise cheapest checks first: common punctuation goes with ``str.replace``; the ASCII
        part (``encode("ascii", "ignore")``, a C loop) shows ASCII symbols and capitals;
        ``isalnum`` and ``is_normalized`` (C loops that stop early) prove there is nothing else to
        remove or fold; the scan itself reports traditional characters. Only a text that fails a
        check pays for the ≈30 ns/char ``str.translate``, and only then is scanned twice.
        """
        norm = _normaliser
        assert norm is not None
        if norm.fold is not None:
            t, ascii_n, digits_n = norm.fold(text)
            return t, self.ac.find_matches_as_indexes(t, overlapping=True), ascii_n, digits_n
        t = text
        for c in EAGER:
            if c in t:
                t = t.replace(c, "")
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
        if ms and max(ms)[0] >= self.n_markers:
            t, b = text.translate(norm.table), None
            ms = ac.find_matches_as_indexes(t, overlapping=True)
        if b is None:
            return t, ms, -1, -1
        return t, ms, len(b), len(b) - len(b.translate(None, b"0123456789"))

    def classify(self, n: str, ms: list[tuple[int, int, int]]
                 ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]], frozenset[str], bool]:
        """Split the matches of :meth:`scan` (sorted in place, by pattern index) into word
        matches outside allowed phrases, allowed matches, the trigger strings found, and whether a
        digit marker was found. The pattern order makes each kind one slice, found by bisection."""
        ms.sort()
        if ms[-1][0] < self.n_words:
            return ms, [], _NOTHING, False
        w = bisect_left(ms, self._allow_key)
        a = bisect_left(ms, self._trigger_key, w)
        found, allowed = ms[:w], ms[w:a]
        if found and allowed:
            inside = set()
            for k, s, _ in allowed:
                for idx, x, y in self.covers[k - self.n_words]:
                    inside.add((idx, s + x, s + y))
            found = [] if inside.issuperset(found) else [f for f in found if f not in inside]
        if a == len(ms):
            return found, allowed, _NOTHING, False
        t = bisect_left(ms, self._marker_key, a)
        return found, allowed, frozenset(n[x:y] for _, x, y in ms[a:t]), t < len(ms)


def min_ascii(regex: str, digits: bool = False) -> int:
    """How many ASCII characters (``digits``: ASCII digits) any match of ``regex`` must contain;
    0 when unsure.

    A text with fewer cannot match, so the regex is not run at all: most chat messages have no
    or few ASCII characters, and one regex search costs about as much as the whole word scan.
    """
    from re import _constants as C  # type: ignore[attr-defined]
    from re import _parser as P  # type: ignore[attr-defined]

    top = 58 if digits else 128
    bottom = 48 if digits else 0

    def within(items: list) -> bool:
        for op, av in items:
            if op is C.LITERAL and bottom <= av < top or op is C.RANGE and bottom <= av[0] and av[1] < top:
                continue
            if op is C.CATEGORY and av is C.CATEGORY_DIGIT:
                continue
            return False
        return True

    def walk(seq: Iterable) -> int:
        total = 0
        for op, av in seq:
            if op is C.LITERAL:
                total += bottom <= av < top
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


#: Automata of the last configurations, by content: a reload (or a test building many configs)
#: with unchanged lists reuses the automaton instead of paying ≈0.2 s for a new one.
_recent: dict[tuple, Matcher] = {}


class _Rule:
    __slots__ = ("name", "regex", "original", "inbound", "outbound", "min_ascii", "min_digits", "requires",
                 "triggers")

    def __init__(self, p: Pattern) -> None:
        self.name = p.name
        self.regex = re.compile(p.regex, re.IGNORECASE if p.ignore_case else 0)
        self.original = p.on == "original"
        self.inbound = p.inbound
        self.outbound = p.outbound
        self.min_ascii = 0 if p.ignore_case else min_ascii(p.regex)
        self.min_digits = 0 if p.ignore_case else min_ascii(p.regex, digits=True)
        self.requires = p.requires
        #: For normalised-view patterns the automaton finds the ``requires`` strings.
        self.triggers = frozenset(normalise(x) for x in p.requires) if not self.original else frozenset()


class SensitiveFilter:
    """A policy's compiled ``[sensitive]`` section: a (shared) matcher, actions per list and
    pattern, the compiled patterns."""

    def __init__(self, matcher: Matcher, actions: dict[str, tuple[str, str]], rules: list[_Rule],
                 mask_char: str, enabled: bool = True) -> None:
        self.matcher = matcher
        self.actions = actions
        self.rules = rules
        self.mask_char = mask_char
        self.enabled = enabled
        self.pattern_names = frozenset(r.name for r in rules)
        #: The rules that may run on a text in which no ``requires`` string was found.
        self.untriggered = [r for r in rules if not r.triggers]

    @classmethod
    def build(cls, cfg: SensitiveConfig, base: Path, file: str, cache: dict) -> SensitiveFilter:
        lists: list[tuple[str, tuple[str, ...]]] = []
        actions: dict[str, tuple[str, str]] = {}
        for i, wl in enumerate(cfg.lists):
            if wl.inbound == "off" and wl.outbound == "off":
                continue
            words = list(wl.words)
            files = [(f"sensitive.lists[{i}].file", wl.file)] if wl.file else []
            files += [(f"sensitive.lists[{i}].extra_files[{j}]", f) for j, f in enumerate(wl.extra_files)]
            for key, name in files:
                words += _read(base, name, file, key)
            lists.append((wl.name, tuple(words)))
            actions[wl.name] = (wl.inbound, wl.outbound)
        allow = list(cfg.allow)
        for j, name in enumerate(cfg.allow_files):
            allow += _read(base, name, file, f"sensitive.allow_files[{j}]")
        rules = [_Rule(p) for p in cfg.patterns if (p.inbound, p.outbound) != ("off", "off")]
        triggers = tuple(sorted({t for r in rules for t in r.triggers}))
        key = (tuple(lists), tuple(allow), triggers)
        matcher = cache.get(key) or _recent.get(key)
        if matcher is None:
            matcher = Matcher(lists, allow, triggers)
        cache[key] = _recent[key] = matcher
        while len(_recent) > 8:
            del _recent[next(iter(_recent))]
        for r in rules:
            actions[r.name] = (r.inbound, r.outbound)
        return cls(matcher, actions, rules, cfg.mask_char, cfg.enabled)

    def hits(self, text: str) -> list[Hit]:
        """Every finding in ``text`` (any list or pattern, either direction), in text order,
        with positions in ``text``. Dropped: hits inside an allowed phrase, and hits inside a
        longer hit of the same list (加微信 reports 加微信, not also 加微 and 微信).

        The common message (no match, or only words inside allowed phrases, no pattern worth
        running) returns after the scan, the sort of its few matches and a few C-level checks;
        the position map is built only for texts with hits."""
        if not self.enabled or not text:
            return []
        m = self.matcher
        n, ms, ascii_n, digits_n = m.scan_counts(text)
        if ms:
            found, allowed, triggered, digits = m.classify(n, ms)
        else:
            found, allowed, triggered, digits = ms, ms, _NOTHING, False
        pattern_hits = self._pattern_hits(text, n, ascii_n, digits_n, allowed, triggered, digits) if self.rules else []
        if not found and not pattern_hits:
            return []
        return self._report(text, n, found, allowed, pattern_hits)

    def _pattern_hits(self, text: str, n: str, ascii_n: int, digits_n: int, allowed: list[tuple[int, int, int]],
                      triggered: frozenset[str], digits: bool) -> list[tuple[int, int, _Rule]]:
        """Matches of the patterns worth running: ``(start, end, rule)``, in normalised
        positions for ``on = "normalised"`` rules, in ``text`` for ``on = "original"``.
        ``ascii_n``, ``digits_n``: the ASCII characters and ASCII digits of ``n``, ``-1`` if
        not known (see :meth:`Matcher.scan_counts`)."""
        view = n
        if digits:
            view = n.translate(_CN_TABLE)
            ascii_n = -1
        if ascii_n < 0:
            ascii_b = view.encode("ascii", "ignore")
            ascii_n = len(ascii_b)
            digits_n = ascii_n - len(ascii_b.translate(None, b"0123456789"))
        if not ascii_n:
            return []
        out: list[tuple[int, int, _Rule]] = []
        for r in self.rules if triggered else self.untriggered:
            if ascii_n < r.min_ascii or digits_n < r.min_digits:
                continue
            if r.triggers:
                if r.triggers.isdisjoint(triggered):
                    continue
                subject = view
            else:
                subject = text if r.original else view
                if r.requires:
                    for x in r.requires:
                        if x in subject:
                            break
                    else:
                        continue
            for mo in r.regex.finditer(subject):
                a, b = mo.span()
                if b > a and (r.original or not any(s <= a and b <= e for _, s, e in allowed)):
                    out.append((a, b, r))
        return out

    def _report(self, text: str, n: str, found: list[tuple[int, int, int]], allowed: list[tuple[int, int, int]],
                pattern_hits: list[tuple[int, int, _Rule]]) -> list[Hit]:
        """The hits in ``text``'s positions, in text order (longer first), without the hits
        that a longer hit of the same list contains.

        A word's normalised characters are fixed points of the table, so each literal occurrence
        of it in ``text`` is one of its occurrences in the normalised text, in the same order.
        When ``text`` has as many literal occurrences as the normalised text has occurrences (the
        word was typed as listed, the usual case), the k-th is the k-th and ``str.find`` gives
        the position. Any other hit goes through the position map, built once on first need."""
        locate: Callable[[int], int] | None = None
        owners = self.matcher.owners
        rows: list[tuple[int, int, int, str, str]] = []  # (start, -end, order, word, source)
        for idx, a, b in found:
            key = n[a:b]
            start = text.find(key)
            if start >= 0 and n.find(key) == a and n.find(key, a + 1) < 0:
                end = start + b - a
            elif len(spots := _find_all(n, key)) == len(typed := _find_all(text, key)):
                start = typed[spots.index(a)]
                end = start + b - a
            else:
                locate = locate or normaliser().locator(text, len(n))
                start, end = locate(a), locate(b - 1) + 1
            for word, source in owners[idx]:
                rows.append((start, -end, len(rows), word, source))
        if pattern_hits:
            locate = locate or normaliser().locator(text, len(n))
            for a, b, r in pattern_hits:
                if not r.original:
                    a, b = locate(a), locate(b - 1) + 1
                elif any(locate(s) <= a and b <= locate(e - 1) + 1 for _, s, e in allowed):
                    continue
                rows.append((a, -b, len(rows), text[a:b], r.name))
        if len(rows) > 1:
            rows.sort()
            rows = _outermost(rows)
        return [Hit(word, start, -neg_end, source) for start, neg_end, _, word, source in rows]

    def action(self, hit: Hit, direction: Direction) -> str:
        inbound, outbound = self.actions.get(hit.source, ("off", "off"))
        return inbound if direction == "inbound" else outbound

    def check(self, text: str, direction: Direction = "outbound") -> list[Hit]:
        """The hits that matter in ``direction`` (lists and patterns not ``off`` there)."""
        return [h for h in self.hits(text) if self.action(h, direction) != "off"]

    def mask(self, text: str, hits: Iterable[Hit]) -> str:
        """``text`` with every character of each hit (separators inside included) masked."""
        chars = list(text)
        for h in hits:
            chars[h.start:h.end] = self.mask_char * (h.end - h.start)
        return "".join(chars)

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


def _find_all(text: str, part: str) -> list[int]:
    """Where ``part`` starts in ``text``, overlapping occurrences included."""
    out = []
    i = text.find(part)
    while i >= 0:
        out.append(i)
        i = text.find(part, i + 1)
    return out


def _outermost(rows: list[tuple[int, int, int, str, str]]) -> list[tuple[int, int, int, str, str]]:
    """``rows`` (sorted ``(start, -end, order, word, source)``) without those that a row of
    the same source with another span contains. A container sorts before what it contains."""
    kept: list[tuple[int, int, int, str, str]] = []
    for row in rows:
        start, neg_end, _, _, source = row
        for k_start, k_neg_end, _, _, k_source in kept:
            if (k_source == source and k_start <= start and k_neg_end <= neg_end
                    and (k_start != start or k_neg_end != neg_end)):
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
    ``router.config.load_config`` (``config.policy_for(shop_id).sensitive``).
    """
    f = section.filter if isinstance(section, SensitiveConfig) else section
    return f.check(text, direction)


# -- hooks -------------------------------------------------------------------------------------


@hookimpl
def fenliu_policy_sections() -> Mapping[str, type[msgspec.Struct]]:
    return {"sensitive": SensitiveConfig}


@hookimpl
def fenliu_configure(config: Config) -> None:
    """Read every word file and build the automata now (one per distinct set of lists)."""
    start = time.perf_counter()
    cache: dict = {}
    for name, policy in config.policies.items():
        policy.sensitive.compile(config.dir, config.policy_file(name), cache)
    log.info("sensitive_configured", policies=len(config.policies), automata=len(cache),
             words=sum(m.words for m in cache.values()), ms=round((time.perf_counter() - start) * 1000, 1))


@hookimpl
def fenliu_inbound_filter(message: Message, ctx: HookContext) -> FilterVerdict | None:
    return ctx.policy.sensitive.filter.verdict(ctx.text if ctx.text is not None else message.text, "inbound")


@hookimpl
def fenliu_outbound_filter(reply: Reply, ctx: HookContext) -> FilterVerdict | None:
    return ctx.policy.sensitive.filter.verdict(reply.text, "outbound")


__all__ = [
    "DEFAULT_PATTERNS", "Matcher", "Normaliser", "Pattern", "SensitiveConfig", "SensitiveFilter",
    "WordList", "check_text", "normalise",
]
