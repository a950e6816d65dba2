"""Built-in plugin ``vip``: queue priority from who the buyer is and how urgent the message is.

Contributions from buyer tags, level, lifetime spend, order amount and urgency words add up and
are capped at ``max_priority``, so a pile of small signals cannot starve everyone else. Each rule
that fired is added to the decision's flags (``vip:svip``, ``vip:level>=5``, ``urgent:投诉``) so a
supervisor can see why a chat jumped the queue.

VIP routing: dedicated agents (专属客服) are the dispatcher's job (``dispatch.dedicated``, by
buyer tag). For a VIP *skill group* this plugin owns the decision: with ``vip_skill`` set, its
``fenliu_classify_skill`` runs first (``tryfirst``) and sends new conversations of VIP buyers
there; open conversations keep their skill (the skills plugin's ``switch`` rules still apply).

Adapters often send the buyer profile with the first message only, so the last profile seen is
kept in the conversation's ``meta`` and scores the later messages too.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Annotated

import msgspec

from plugins.skills import KeywordIndex
from router.core.config import ConfigError
from router.core.hookspecs import hookimpl
from router.core.textcache import text_cache

if TYPE_CHECKING:
    from router.core.config import Config
    from router.core.context import HookContext
    from router.core.models import Buyer, Message


class Threshold(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``points`` when the value is at least ``min``; of a list, only the highest one met counts."""

    min: Annotated[float, msgspec.Meta(ge=0)]
    points: int


class VipConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, dict=True):
    """``[vip]``: priority contributions, their cap, and the optional VIP skill group."""

    enabled: bool = True
    max_priority: Annotated[int, msgspec.Meta(ge=0)] = 100
    tags: dict[str, int] = {}
    levels: tuple[Threshold, ...] = ()
    lifetime_spend: tuple[Threshold, ...] = ()
    order_amount: tuple[Threshold, ...] = ()
    urgent_words: dict[str, int] = {}
    urgent_skills: tuple[str, ...] = ("aftersale",)
    vip_skill: str = ""
    vip_skill_tags: tuple[str, ...] = ()
    vip_skill_min_level: Annotated[int, msgspec.Meta(ge=0)] = 0
    vip_skill_min_spend: Annotated[float, msgspec.Meta(ge=0)] = 0.0

    @cached_property
    def compiled(self) -> _Compiled:
        return _Compiled(self)


def _label(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


class _Compiled:
    """Thresholds sorted highest first and the urgency words in one index, built once."""

    __slots__ = ("levels", "spend", "amount", "urgent", "urgent_skills", "has_urgent", "scores", "urgent_in", "tags",
                 "buyer_points")

    def __init__(self, cfg: VipConfig) -> None:
        self.levels = sorted(cfg.levels, key=lambda t: -t.min)
        self.spend = sorted(cfg.lifetime_spend, key=lambda t: -t.min)
        self.amount = sorted(cfg.order_amount, key=lambda t: -t.min)
        self.urgent: KeywordIndex[int] = KeywordIndex(cfg.urgent_words.items())
        self.urgent_skills = frozenset(cfg.urgent_skills)
        self.has_urgent = bool(self.urgent)
        self.urgent_in = text_cache(lambda text: tuple(self.urgent.matches(text.lower())), "vip")
        self.tags = dict(cfg.tags)
        #: a buyer's points and flags, cached: every message of a conversation carries its buyer
        self.buyer_points = functools.lru_cache(maxsize=4096)(self._buyer_points)
        #: whether any rule could add a point: without one every score is 0 and no flag
        self.scores = bool(cfg.tags or self.levels or self.spend or self.amount or self.has_urgent)

    def urgent_for(self, skill: str | None) -> bool:
        """Whether urgency words count for a message of ``skill`` (``urgent_skills`` empty: any)."""
        return self.has_urgent and (not self.urgent_skills or skill in self.urgent_skills)

    def _buyer_points(self, buyer: Buyer) -> tuple[int, tuple[str, ...]]:
        total = 0
        flags = []
        for tag in buyer.tags:
            points = self.tags.get(tag)
            if points is not None:
                total += points
                flags.append(f"vip:{tag}")
        if (t := _first(self.levels, buyer.level)) is not None:
            total += t.points
            flags.append(f"vip:level>={_label(t.min)}")
        if (t := _first(self.spend, buyer.lifetime_spend)) is not None:
            total += t.points
            flags.append(f"vip:spend>={_label(t.min)}")
        return total, tuple(flags)


def _first(thresholds: list[Threshold], value: float) -> Threshold | None:
    for t in thresholds:
        if value >= t.min:
            return t
    return None


def score(message: Message, skill: str | None, cfg: VipConfig, buyer: Buyer | None = None) -> tuple[int, list[str]]:
    """``(priority, flags)`` for one message: the sum of what fired, capped at ``max_priority``.
    ``buyer`` stands in when the message carries no buyer profile."""
    c = cfg.compiled
    total = 0
    flags: list[str] = []
    if not c.scores:
        return 0, flags
    buyer = message.buyer or buyer
    if buyer is not None:
        total, found = c.buyer_points(buyer)
        flags.extend(found)
    if message.order is not None and (t := _first(c.amount, message.order.amount)) is not None:
        total += t.points
        flags.append(f"vip:order>={_label(t.min)}")
    if c.urgent_for(skill):
        for word, points in c.urgent_in(message.text):
            total += points
            flags.append(f"urgent:{word}")
    return min(total, cfg.max_priority), flags


def is_vip(message: Message, cfg: VipConfig) -> bool:
    """Whether the buyer belongs in ``vip_skill`` (by tag, level or lifetime spend)."""
    buyer = message.buyer
    if buyer is None:
        return False
    return (
        any(t in cfg.vip_skill_tags for t in buyer.tags)
        or (cfg.vip_skill_min_level > 0 and buyer.level >= cfg.vip_skill_min_level)
        or (cfg.vip_skill_min_spend > 0 and buyer.lifetime_spend >= cfg.vip_skill_min_spend)
    )


@hookimpl
def fenliu_policy_sections() -> Mapping[str, type[msgspec.Struct]]:
    return {"vip": VipConfig}


@hookimpl
def fenliu_configure(config: Config) -> None:
    skills = {s for a in config.agents.values() for s in a.skills}
    for name, policy in config.policies.items():
        cfg: VipConfig = policy.vip
        file = str(config.policy_file(name))
        for key, words in (("urgent_words", cfg.urgent_words), ("tags", cfg.tags)):
            for word in words:
                if not word.strip():
                    raise ConfigError(file, f"vip.{key}", "empty key")
        if cfg.vip_skill and skills and cfg.vip_skill not in skills:
            raise ConfigError(file, "vip.vip_skill", f"no agent has skill {cfg.vip_skill!r}")
        if cfg.vip_skill and not (cfg.vip_skill_tags or cfg.vip_skill_min_level or cfg.vip_skill_min_spend):
            raise ConfigError(file, "vip.vip_skill", "set vip_skill_tags, vip_skill_min_level or vip_skill_min_spend to say who is a VIP")
        cfg.compiled  # noqa: B018 - build now, not on the first message


@hookimpl(tryfirst=True)
def fenliu_classify_skill(message: Message, ctx: HookContext) -> str | None:
    cfg: VipConfig = ctx.policy.vip
    if not cfg.enabled or not cfg.vip_skill or ctx.conversation is not None or message.buyer is None:
        return None
    if is_vip(message, cfg):
        ctx.flag(f"vip_skill:{cfg.vip_skill}")
        return cfg.vip_skill
    return None


@hookimpl
def fenliu_priority(message: Message, ctx: HookContext) -> int | None:
    cfg: VipConfig = ctx.policy.vip
    if not cfg.enabled:
        return None
    buyer = message.buyer
    if buyer is not None:
        ctx.meta["vip_buyer"] = buyer
    else:
        buyer = ctx.meta.get("vip_buyer")  # type: ignore[assignment]
    c = cfg.compiled
    if buyer is None and message.order is None and not (c.urgent_for(ctx.skill) and c.urgent_in(message.text)):
        return None  # nothing to score: no buyer, no order, no urgency word (that applies) in the text
    total, flags = score(message, ctx.skill, cfg, buyer)
    for f in flags:
        ctx.flag(f)
    return total or None


__all__ = ["Threshold", "VipConfig", "is_vip", "score"]
