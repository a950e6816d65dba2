"""Built-in plugin ``skills``: which skill group (售前, 售后, 物流 …) handles a conversation.

Ordered rules per policy (``[skills]``), first match wins, a default skill. An open conversation
keeps its skill — agents hate a chat changing hands because one word matched — unless the
matching rule says ``switch = true`` (a presale chat that turns into 退款 moves to aftersale).

Also home of :class:`KeywordIndex`, the keyword matcher the bot and vip plugins share: a few
keywords are fastest as plain ``in`` checks, many as one ahocorasick-rs automaton (measured on
20-character messages: ``in`` wins up to about 8 keywords, the automaton stays at ≈0.45 µs).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Generic, TypeVar

import ahocorasick_rs
import msgspec
import structlog

from router.core.config import ConfigError, Platform
from router.core.hookspecs import hookimpl
from router.core.logging import debug_enabled
from router.core.models import Kind
from router.core.plugins import hook_alias, text_cache

if TYPE_CHECKING:
    from router.core.config import Config
    from router.core.context import HookContext
    from router.core.models import Message

log = structlog.get_logger("fenliu.skills")

T = TypeVar("T")


class KeywordIndex(Generic[T]):
    """Finds which of many ``(keyword, value)`` pairs occur in a text, in pair order.

    Keywords are matched case-insensitively: callers pass ``text.lower()``.
    """

    SMALL = 8

    __slots__ = ("words", "owners", "values", "keywords", "_ac")

    def __init__(self, pairs: Iterable[tuple[str, T]]) -> None:
        index: dict[str, int] = {}
        self.words: list[str] = []
        self.owners: list[list[int]] = []
        self.values: list[T] = []
        self.keywords: list[str] = []
        for n, (word, value) in enumerate(pairs):
            self.values.append(value)
            self.keywords.append(word)
            w = word.lower()
            if not w:
                continue
            if w not in index:
                index[w] = len(self.words)
                self.words.append(w)
                self.owners.append([])
            self.owners[index[w]].append(n)
        self._ac = (ahocorasick_rs.AhoCorasick(self.words, matchkind=ahocorasick_rs.MatchKind.Standard)
                    if len(self.words) > self.SMALL else None)

    def __bool__(self) -> bool:
        return bool(self.words)

    def hits(self, text: str) -> list[int]:
        """Indexes of the pairs whose keyword occurs in ``text``, ascending."""
        if self._ac is None:
            found = [i for i, w in enumerate(self.words) if w in text]
        else:
            found = list({i for i, _, _ in self._ac.find_matches_as_indexes(text, overlapping=True)})
        if not found:
            return []
        return sorted(n for i in found for n in self.owners[i])

    def found(self, text: str) -> bool:
        """Whether any keyword occurs in ``text`` (:meth:`hits`, without building its list)."""
        if self._ac is None:
            return any(w in text for w in self.words)
        return bool(self._ac.find_matches_as_indexes(text, overlapping=True))

    def values_in(self, text: str) -> set[T]:
        """The values of the pairs whose keyword occurs in ``text`` (:meth:`hits` as a set of
        values, without sorting the pairs)."""
        values, owners = self.values, self.owners
        if self._ac is None:
            return {values[n] for i, w in enumerate(self.words) if w in text for n in owners[i]}
        return {values[n] for i, _, _ in self._ac.find_matches_as_indexes(text, overlapping=True) for n in owners[i]}

    def matches(self, text: str) -> list[tuple[str, T]]:
        """The ``(keyword, value)`` pairs found (keywords as configured), in pair order."""
        return [(self.keywords[n], self.values[n]) for n in self.hits(text)]


class SkillRule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One rule. Conditions of different kinds must all hold; inside one kind any value does.
    ``keywords`` and ``regex`` together form the text condition (either may match)."""

    skill: str = ""
    name: str = ""
    keywords: tuple[str, ...] = ()
    regex: str = ""
    kinds: tuple[Kind, ...] = ()
    order_status: tuple[str, ...] = ()
    platforms: tuple[Platform, ...] = ()
    switch: bool = False


class SkillsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, dict=True):
    """``[skills]``: ordered rules, first match wins; ``default`` when none matches (empty:
    defer to other plugins and the policy's ``dispatch.default_skill``)."""

    enabled: bool = True
    default: str = ""
    rules: tuple[SkillRule, ...] = ()

    @cached_property
    def compiled(self) -> _Compiled:
        return _Compiled(self)


class _Compiled:
    """A policy's rules with keywords in one index and regexes compiled, built once per config."""

    __slots__ = ("rules", "regex", "patterns", "text_rules", "keywords", "has_keywords", "has_text", "has_switch",
                 "statuses", "_by_context")

    def __init__(self, cfg: SkillsConfig) -> None:
        self.rules = cfg.rules
        self.regex: list[re.Pattern[str] | None] = [re.compile(r.regex) if r.regex else None for r in cfg.rules]
        #: ``(rule index, pattern)`` of the rules with a regex
        self.patterns = [(i, p) for i, p in enumerate(self.regex) if p is not None]
        self.text_rules = [bool(r.keywords or r.regex) for r in cfg.rules]
        self.keywords: KeywordIndex[int] = KeywordIndex((k, i) for i, r in enumerate(cfg.rules) for k in r.keywords)
        self.has_keywords = bool(self.keywords)
        self.has_text = any(self.text_rules)
        self.has_switch = any(r.switch for r in cfg.rules)
        self.statuses = frozenset(st for r in cfg.rules for st in r.order_status)
        #: per (kind, order status, platform), and per platform alone for a text with no status
        self._by_context: dict[tuple[str, str | None, str] | str, Callable[[str], SkillRule | None]] = {}

    def _text_hits(self, text: str) -> frozenset[int]:
        """The rules whose text condition (a keyword, or else the regex) holds for ``text``."""
        found = self.keywords.values_in(text.lower()) if self.has_keywords else set()
        for i, pattern in self.patterns:
            if i not in found and pattern.search(text) is not None:
                found.add(i)
        return frozenset(found)

    def match(self, message: Message, platform: str) -> SkillRule | None:
        """The first rule that holds, cached by exact text per (kind, order status, platform):
        a status no rule names counts as none, so buyers' input cannot grow the contexts."""
        if not self.rules:
            return None
        order = message.order
        if order is None or order.status not in self.statuses:
            # the usual context (a text, no status a rule names) is keyed by platform alone,
            # without a tuple made and hashed per message
            first = self._by_context.get(platform) if message.kind == "text" else None
            if first is None:
                first = self._for_context(message.kind, None, platform)
        else:
            first = self._for_context(message.kind, order.status, platform)
        return first(message.text)

    def _for_context(self, kind: str, status: str | None, platform: str) -> Callable[[str], SkillRule | None]:
        key = (kind, status, platform)
        first = self._by_context.get(key)
        if first is None:
            first = self._by_context[key] = text_cache(functools.partial(self._first, *key), "skills")
            if kind == "text" and status is None:
                self._by_context[platform] = first
        return first

    def _first(self, kind: str, status: str | None, platform: str, text: str) -> SkillRule | None:
        text_hits = self._text_hits(text) if self.has_text else _NONE
        for i, rule in enumerate(self.rules):
            if rule.kinds and kind not in rule.kinds:
                continue
            if rule.order_status and status not in rule.order_status:
                continue
            if rule.platforms and platform not in rule.platforms:
                continue
            if self.text_rules[i] and i not in text_hits:
                continue
            return rule
        return None


_NONE: frozenset[int] = frozenset()


def validate(file: str, cfg: SkillsConfig, known_skills: set[str] | None = None) -> ConfigError | None:
    """The first problem in a ``[skills]`` section, as ``file: skills.rules[3].regex: reason``."""
    for i, rule in enumerate(cfg.rules):
        key = f"skills.rules[{i}]"
        if not rule.skill:
            return ConfigError(file, f"{key}.skill", "required key is missing")
        if rule.regex:
            try:
                re.compile(rule.regex)
            except re.error as exc:
                return ConfigError(file, f"{key}.regex", f"invalid regular expression: {exc}")
        if not (rule.keywords or rule.regex or rule.kinds or rule.order_status or rule.platforms):
            return ConfigError(file, key, "a rule needs at least one condition (`keywords`, `regex`, `kinds`, `order_status`, `platforms`)")
        for j, word in enumerate(rule.keywords):
            if not word.strip():
                return ConfigError(file, f"{key}.keywords[{j}]", "empty keyword")
        if known_skills and rule.skill not in known_skills:
            return ConfigError(file, f"{key}.skill", f"no agent has skill {rule.skill!r}")
    if known_skills and cfg.default and cfg.default not in known_skills:
        return ConfigError(file, "skills.default", f"no agent has skill {cfg.default!r}")
    return None


def classify(message: Message, ctx: HookContext) -> str | None:
    """The skill for ``message`` under the shop's ``[skills]`` rules (``None``: no opinion)."""
    cfg: SkillsConfig = ctx.policy.skills
    if not cfg.enabled:
        return None
    compiled = cfg.compiled
    conv = ctx.conversation
    current = conv.skill if conv is not None else None
    if current is not None and not compiled.has_switch:
        return None  # an open conversation keeps its skill, and no rule may move it
    rule = compiled.match(message, ctx.shop.platform)
    if current is not None:
        if rule is not None and rule.switch and rule.skill != current:
            if debug_enabled():
                log.debug("skill_switch", rule=rule.name or rule.skill, old=current, new=rule.skill)
            return rule.skill
        return None
    if rule is not None:
        return rule.skill
    return cfg.default or None


@hookimpl
def fenliu_policy_sections() -> Mapping[str, type[msgspec.Struct]]:
    return {"skills": SkillsConfig}


@hookimpl
def fenliu_configure(config: Config) -> None:
    """Reject bad rules and compile every policy's rules before the config goes live."""
    skills = {s for a in config.agents.values() for s in a.skills}
    for name, policy in config.policies.items():
        cfg: SkillsConfig = policy.skills
        error = validate(str(config.policy_file(name)), cfg, skills)
        if error is not None:
            raise error
        cfg.compiled  # noqa: B018 - compile now, not on the first message


fenliu_classify_skill = hookimpl(hook_alias(classify, "fenliu_classify_skill"))


__all__ = ["KeywordIndex", "SkillRule", "SkillsConfig", "classify", "validate"]
