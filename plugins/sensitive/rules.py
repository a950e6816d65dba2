"""The patterns compiled, with the gates that spare most texts the regex: how many ASCII
characters and digits, and how long a digit run, any match needs (one regex search costs about
as much as the whole word scan, and most chat messages have few ASCII characters).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from plugins.sensitive.folding import normalise_words

if TYPE_CHECKING:
    from plugins.sensitive.config import Pattern

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


class Rule:
    """One pattern ready to run: its compiled regex, its actions and its gates."""

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
