"""Built-in plugin ``bot``: the 机器人 that greets, answers FAQs and knows when to step aside.

What it says, in order of precedence (the first that applies wins):

1. A human already holds the conversation (queued, reserved, assigned): silence, unless the
   reply kind is listed in ``while_human``.
2. Hand-off to a human (``BotReply(handoff=True)``: the reply goes out with the assignment):
   after-sales or another ``handoff_skills`` skill, an explicit request (``handoff_words``:
   人工, 转人工, 客服), negative sentiment (``negative_words``: 投诉, 差评, 骗子 …), or the buyer
   asking again a question the bot already answered in this conversation.
3. An FAQ answer (``config/faq/*.toml``, matched by keywords; the longest keyword wins): the
   message is settled (``answered``), even outside business hours.
4. The offline reply when the shop is closed or none of its agents is online (hand-off: the
   conversation waits in the queue for the first agent).
5. The welcome on first contact (hand-off).

When the shop is offline, hand-off replies are replaced by the offline reply: promising "正在为您
转接人工客服" to a buyer at 3 a.m. is worse than saying when someone will be there.
The bot never sends the same text twice in a row in one conversation (state in ``ctx.meta``).

Quick replies (话术库) live in the same FAQ files; :func:`list_quick_replies`,
:func:`suggest_quick_replies` and :func:`render_quick_reply` are for the agents' workbench.
"""

from __future__ import annotations

import functools
import string
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import structlog

from plugins.bot_match import Match, Matcher, Thresholds, Vocabulary, build_vocabulary
from plugins.skills import KeywordIndex
from router.core.config import ConfigError, Platform, _error_from_validation, _read_toml
from router.core.hookspecs import hookimpl
from router.core.logging import debug_enabled
from router.core.models import BotReply, Buyer, Message, Order
from router.core.plugins import hook_alias, text_cache

if TYPE_CHECKING:
    from router.core.config import Config, Shop
    from router.core.context import HookContext

log = structlog.get_logger("fenliu.bot")

#: Placeholders a template may use, and where their values come from.
PLACEHOLDERS: tuple[str, ...] = ("shop", "buyer", "order_id", "goods", "amount", "status")

#: What the bot does with a confident FAQ match: ``settle`` answers and closes the matter (no
#: human), ``suggest`` puts the answer in the agent's composer and routes the conversation to a
#: human, ``answer_and_handoff`` answers and still routes the conversation to a human.
Mode = Literal["settle", "suggest", "answer_and_handoff"]

ReplyKind = Literal["welcome", "offline", "faq", "request", "negative", "repeat", "skill"]


# -- configuration -------------------------------------------------------------------------------


class ShopTexts(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Per-shop overrides of the policy's texts (``[bot.shops."pdd-1001"]``)."""

    welcome: str | None = None
    offline: str | None = None


class BotConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, dict=True):
    """``[bot]``. Empty texts switch that reply off."""

    enabled: bool = True
    welcome: str = ""
    offline: str = ""
    shops: dict[str, ShopTexts] = {}
    faq_groups: tuple[str, ...] = ()
    handoff_words: tuple[str, ...] = ("转人工", "人工", "客服", "真人")
    handoff_reply: str = "好的，正在为您转接人工客服，请稍候~"
    negative_words: tuple[str, ...] = ("投诉", "差评", "骗子", "垃圾", "举报", "12315", "坑人", "欺诈")
    negative_reply: str = "非常抱歉给您带来不好的体验，正在为您转接人工客服，请稍候。"
    handoff_skills: dict[str, str] = msgspec.field(
        default_factory=lambda: {"aftersale": "您好，您的售后问题已收到，正在为您转接售后客服，请稍候。"})
    repeat_handoff: bool = True
    repeat_reply: str = "抱歉刚才的回答没能帮到您，正在为您转接人工客服，请稍候。"
    while_human: tuple[Literal["faq", "offline"], ...] = ()
    fallbacks: dict[str, str] = msgspec.field(default_factory=lambda: {"buyer": "亲"})
    mode: Mode = "settle"
    platform_modes: dict[str, Mode] = {}
    answer_threshold: float = 0.5
    suggest_threshold: float = 0.3
    margin: float = 0.05
    min_coverage: float = 0.5


class FaqEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One bot answer: sent when the buyer's message means what its ``keywords`` and
    ``questions`` (相似问法) say (see plugins/bot_match.py)."""

    id: str
    keywords: tuple[str, ...]
    answer: str
    questions: tuple[str, ...] = ()
    shops: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    mode: Mode | None = None


class QuickReply(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One 话术: a template an agent inserts by clicking it or typing one of its ``keywords``."""

    id: str
    text: str
    title: str = ""
    keywords: tuple[str, ...] = ()
    group: str = ""


class FaqFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A file in ``config/faq/``: a group (default: the file name) of answers and quick replies."""

    group: str = ""
    faq: tuple[FaqEntry, ...] = ()
    quick: tuple[QuickReply, ...] = ()


class FaqLibrary(msgspec.Struct, frozen=True):
    """Every FAQ file of a configuration, validated."""

    faq: tuple[tuple[str, FaqEntry], ...] = ()
    quick: tuple[QuickReply, ...] = ()
    groups: frozenset[str] = frozenset()
    #: (file, index in its file, entry) for error messages
    located: tuple[tuple[str, int, FaqEntry], ...] = ()


def _check_template(file: str, key: str, text: str) -> ConfigError | None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        return ConfigError(file, key, f"bad template: {exc} (write {{{{ and }}}} for literal braces)")
    for f in fields:
        if f not in PLACEHOLDERS:
            return ConfigError(file, key, f"unknown placeholder `{{{f}}}` (known: {', '.join('`{' + p + '}`' for p in PLACEHOLDERS)})")
    return None


def load_faq(config_dir: Path, shops: Mapping[str, Any] = {}) -> FaqLibrary:
    """Read and validate ``config_dir/faq/*.toml``; raise the first :class:`ConfigError`."""
    faq: list[tuple[str, FaqEntry]] = []
    located: list[tuple[str, int, FaqEntry]] = []
    quick: list[QuickReply] = []
    groups: set[str] = set()
    ids: dict[str, str] = {}
    folder = config_dir / "faq"
    for path in sorted(folder.glob("*.toml")) if folder.is_dir() else ():
        file = str(path)
        errors: list[ConfigError] = []
        raw = _read_toml(path, errors)
        if errors:
            raise errors[0]
        try:
            data = msgspec.convert(raw, FaqFile, strict=True)
        except msgspec.ValidationError as exc:
            raise _error_from_validation(file, exc) from None
        group = data.group or path.stem
        groups.add(group)
        for kind, items in (("faq", data.faq), ("quick", data.quick)):
            for i, item in enumerate(items):
                key = f"{kind}[{i}]"
                if not item.id.strip():
                    raise ConfigError(file, f"{key}.id", "empty id")
                seen = ids.get(f"{kind}:{item.id}")
                if seen is not None:
                    raise ConfigError(file, f"{key}.id", f"duplicate id {item.id!r} (also in {seen})")
                ids[f"{kind}:{item.id}"] = file
                for j, word in enumerate(item.keywords):
                    if not word.strip():
                        raise ConfigError(file, f"{key}.keywords[{j}]", "empty keyword")
                text_key = "answer" if kind == "faq" else "text"
                text = getattr(item, text_key)
                if not text.strip():
                    raise ConfigError(file, f"{key}.{text_key}", "empty text")
                if (err := _check_template(file, f"{key}.{text_key}", text)) is not None:
                    raise err
        for i, entry in enumerate(data.faq):
            if not entry.keywords:
                raise ConfigError(file, f"faq[{i}].keywords", "an FAQ entry needs at least one keyword")
            for j, sid in enumerate(entry.shops):
                if shops and sid not in shops:
                    raise ConfigError(file, f"faq[{i}].shops[{j}]", f"unknown shop {sid!r}")
            for j, question in enumerate(entry.questions):
                if not question.strip():
                    raise ConfigError(file, f"faq[{i}].questions[{j}]", "empty question")
            faq.append((group, entry))
            located.append((file, i, entry))
        quick.extend(msgspec.structs.replace(q, group=q.group or group) for q in data.quick)
    return FaqLibrary(tuple(faq), tuple(quick), frozenset(groups), tuple(located))


# -- compiled per policy -------------------------------------------------------------------------


#: The verdict when a policy has no FAQ (a frozen struct: one for all).
_NO_MATCH = Match("none")


class _BotState:
    """A policy's bot, ready for the hot path: keyword indexes and the FAQ and quick replies of
    its groups. Built in ``fenliu_configure`` and stored on the policy's ``BotConfig``, so it
    swaps with the configuration."""

    __slots__ = ("cfg", "faq", "matcher", "quick", "quick_by_id", "quick_index", "quick_matcher", "handoff",
                 "negative", "has_faq", "has_handoff", "has_negative", "has_words", "asks", "shops", "_plain")

    def __init__(self, cfg: BotConfig, library: FaqLibrary, vocab: Vocabulary,
                 platforms: Mapping[str, str] = {}) -> None:
        wanted = set(cfg.faq_groups) if cfg.faq_groups else None
        self.cfg = cfg
        self.faq = [e for g, e in library.faq if wanted is None or g in wanted]
        thresholds = Thresholds(cfg.answer_threshold, cfg.suggest_threshold, cfg.margin, cfg.min_coverage)
        self.matcher = Matcher(vocab, [(*e.keywords, *e.questions) for e in self.faq],
                               [_entry_shops(e, platforms) for e in self.faq], thresholds)
        self.quick = [q for q in library.quick if wanted is None or q.group in wanted]
        self.quick_by_id = {q.id: q for q in self.quick}
        self.quick_index: KeywordIndex[QuickReply] = KeywordIndex((k, q) for q in self.quick for k in q.keywords)
        self.quick_matcher = Matcher(vocab, [(q.title, *q.keywords) for q in self.quick], (), thresholds)
        self.handoff: KeywordIndex[None] = KeywordIndex((w, None) for w in cfg.handoff_words)
        self.negative: KeywordIndex[None] = KeywordIndex((w, None) for w in cfg.negative_words)
        self.has_faq, self.has_handoff, self.has_negative = bool(self.faq), bool(self.handoff), bool(self.negative)
        self.has_words = self.has_handoff or self.has_negative
        self.asks = text_cache(self._asks, "bot_words")
        #: per shop id, what the hook looks up about the shop (:class:`_ShopBot`), made on its
        #: first message
        self.shops: dict[str, _ShopBot] = {}
        self._plain = functools.lru_cache(maxsize=4096)(self._render_plain)

    def shop(self, shop: Shop) -> _ShopBot:
        """The bot's view of ``shop`` (its texts, answer mode, matcher, filled replies)."""
        plan = self.shops.get(shop.id)
        if plan is None or plan.shop is not shop:
            plan = self.shops[shop.id] = _ShopBot(self, shop)
        return plan

    def fill(self, template: str, shop: Shop, buyer: Buyer | None, order: Order | None) -> str:
        """``template`` filled for a message, from a bounded cache: a conversation's buyer and
        order come with each of its messages, and most replies name neither."""
        if buyer is not None and not buyer.nick:
            buyer = None  # only the nick is a placeholder
        return self._plain(template, shop.name or shop.id, buyer, order)

    def _render_plain(self, template: str, shop_label: str, buyer: Buyer | None, order: Order | None) -> str:
        values = placeholder_values(None, buyer, order, self.cfg.fallbacks)
        values["shop"] = shop_label
        return render(template, values)

    def _asks(self, text: str) -> tuple[bool, bool]:
        """Whether ``text`` asks for a human (转人工), and whether it is negative (投诉)."""
        lowered = text.lower()
        return (self.has_handoff and self.handoff.found(lowered),
                self.has_negative and self.negative.found(lowered))

    def match(self, text: str, shop_id: str) -> Match:
        """The matcher's verdict (answer / suggest / none) for a buyer's message in a shop."""
        if not self.has_faq:
            return _NO_MATCH
        return self.matcher.match(text, shop_id)

    def match_faq(self, text: str, shop_id: str) -> FaqEntry | None:
        """The entry the bot would answer with (a confident match), or ``None``."""
        m = self.match(text, shop_id)
        return self.faq[m.entry] if m.outcome == "answer" else None


class _ShopBot:
    """What the bot needs to know about one shop, worked out on its first message instead of on
    every one: its welcome and offline texts, its platform's answer mode, the FAQ matcher for the
    entries it may use, and the replies filled for it when the message names no buyer nick and
    no order (the usual case: the fill is then the same for every buyer of the shop)."""

    __slots__ = ("shop", "state", "label", "welcome", "offline", "platform_mode", "match", "filled")

    def __init__(self, state: _BotState, shop: Shop) -> None:
        cfg = state.cfg
        texts = cfg.shops.get(shop.id)
        self.shop = shop
        self.state = state
        self.label = shop.name or shop.id
        self.welcome = texts.welcome if texts is not None and texts.welcome is not None else cfg.welcome
        self.offline = texts.offline if texts is not None and texts.offline is not None else cfg.offline
        #: an entry's own ``mode`` wins over this (see :func:`mode_for`)
        self.platform_mode: Mode = cfg.platform_modes.get(shop.platform) or cfg.mode
        self.match = state.matcher.for_shop(shop.id) if state.has_faq else None
        #: template → filled text; bounded by the configuration's templates and answers
        self.filled: dict[str, str] = {}

    def fill(self, template: str, buyer: Buyer | None, order: Order | None) -> str:
        """``template`` filled for a message of this shop (as :meth:`_BotState.fill`)."""
        if order is None and (buyer is None or not buyer.nick):
            text = self.filled.get(template)
            if text is None:
                text = self.filled[template] = self.state._render_plain(template, self.label, None, None)
            return text
        return self.state.fill(template, self.shop, buyer, order)


def _entry_shops(entry: FaqEntry, platforms: Mapping[str, str]) -> tuple[str, ...]:
    """The shops an entry may answer in: its ``shops``, narrowed to its ``platforms``."""
    if not entry.platforms:
        return entry.shops
    allowed = tuple(sid for sid, p in platforms.items() if p in entry.platforms and (not entry.shops or sid in entry.shops))
    return allowed or ("\0none",)


def _platforms(config: Config) -> dict[str, str]:
    return {sid: shop.platform for sid, shop in config.shops.items()}


def _state(cfg: BotConfig, config: Config) -> _BotState:
    state = cfg.__dict__.get("state")
    if state is None:
        state = cfg.__dict__["state"] = _BotState(cfg, load_faq(config.dir, config.shops), build_vocabulary(config.dir),
                                                  _platforms(config))
    return state  # type: ignore[no-any-return]


def mode_for(cfg: BotConfig, entry: FaqEntry, platform: str) -> Mode:
    """The answer mode of ``entry`` in a shop of ``platform``: the entry's ``mode``, else the
    policy's ``platform_modes[platform]``, else its ``mode``."""
    return entry.mode or cfg.platform_modes.get(platform) or cfg.mode


# -- placeholders --------------------------------------------------------------------------------


class _Values(dict[str, str]):
    def __init__(self, values: Mapping[str, str], keep_missing: bool) -> None:
        super().__init__(values)
        self.keep_missing = keep_missing

    def __missing__(self, key: str) -> str:
        return "{" + key + "}" if self.keep_missing else ""


def placeholder_values(shop: Shop | None, buyer: Buyer | None = None, order: Order | None = None,
                       fallbacks: Mapping[str, str] = {}) -> dict[str, str]:
    """What ``{shop}``, ``{buyer}``, ``{order_id}``, ``{goods}``, ``{amount}``, ``{status}`` stand
    for, from the message's buyer and order context; ``fallbacks`` fill what is unknown."""
    values = dict(fallbacks)
    if shop is not None:
        values["shop"] = shop.name or shop.id
    if buyer is not None and buyer.nick:
        values["buyer"] = buyer.nick
    if order is not None:
        if order.order_id:
            values["order_id"] = order.order_id
        if order.goods:
            values["goods"] = order.goods
        if order.amount:
            values["amount"] = f"{order.amount:.2f}"
        if order.status:
            values["status"] = order.status
    return values


def render(template: str, values: Mapping[str, str], keep_missing: bool = False) -> str:
    """Fill a template; unknown values become empty, or stay as ``{name}`` with ``keep_missing``
    (the workbench shows the agent what is left to fill in)."""
    return template.format_map(_Values(values, keep_missing))


# -- the workbench's quick replies ---------------------------------------------------------------


def list_quick_replies(config: Config, shop_id: str, group: str | None = None) -> list[QuickReply]:
    """The shop's quick replies (its policy's groups), optionally of one group, in file order."""
    state = _state(config.policy_for(shop_id).bot, config)
    return [q for q in state.quick if group is None or q.group == group]


def suggest_quick_replies(config: Config, shop_id: str, typed: str) -> list[QuickReply]:
    """Quick replies whose keyword occurs in what the agent typed (输入关键词即可调出)."""
    state = _state(config.policy_for(shop_id).bot, config)
    out: list[QuickReply] = []
    for _, q in state.quick_index.matches(typed.lower()):
        if q not in out:
            out.append(q)
    return out


def render_quick_reply(config: Config, shop_id: str, reply_id: str, message: Message | None = None,
                       *, keep_missing: bool = True, **values: str) -> str:
    """The text of quick reply ``reply_id`` for a conversation: placeholders filled from the
    message's buyer and order (and ``values``, which win). Raises ``KeyError`` for an unknown id."""
    cfg: BotConfig = config.policy_for(shop_id).bot
    q = _state(cfg, config).quick_by_id[reply_id]
    shop = config.shops.get(shop_id)
    filled = placeholder_values(shop, message.buyer if message else None, message.order if message else None, cfg.fallbacks)
    filled.update(values)
    return render(q.text, filled, keep_missing)


class Suggestion(msgspec.Struct, frozen=True):
    """A reply the workbench offers the agent (智能辅助): an FAQ answer or a quick reply, filled."""

    kind: Literal["faq", "quick"]
    id: str
    title: str
    text: str
    score: float


def suggest_replies(config: Config, shop_id: str, text: str, message: Message | None = None,
                    k: int = 3) -> list[Suggestion]:
    """The ``k`` best FAQ answers and quick replies for a buyer's message ``text``, best first,
    placeholders filled from ``message``'s buyer and order (unknown ones kept as ``{name}``)."""
    cfg: BotConfig = config.policy_for(shop_id).bot
    state = _state(cfg, config)
    shop = config.shops.get(shop_id)
    values = placeholder_values(shop, message.buyer if message else None, message.order if message else None, cfg.fallbacks)
    floor = cfg.suggest_threshold
    out: list[Suggestion] = []
    for i, score in state.matcher.top(text, shop_id, k, floor):
        e = state.faq[i]
        title = e.questions[0] if e.questions else e.keywords[0]
        out.append(Suggestion("faq", e.id, title, render(e.answer, values, True), round(score, 3)))
    seen = set()
    for _, q in state.quick_index.matches(text.lower()):
        if q.id not in seen:
            seen.add(q.id)
            out.append(Suggestion("quick", q.id, q.title or q.id, render(q.text, values, True), 1.0))
    for i, score in state.quick_matcher.top(text, shop_id, k, floor):
        q = state.quick[i]
        if q.id not in seen:
            seen.add(q.id)
            out.append(Suggestion("quick", q.id, q.title or q.id, render(q.text, values, True), round(score, 3)))
    out.sort(key=lambda s: -s.score)
    return out[:k]


# -- the bot ----------------------------------------------------------------------------------------

_HELD = frozenset(("queued", "reserved", "assigned"))


def decide(message: Message, ctx: HookContext) -> BotReply | None:
    """The bot's reply to ``message`` (see the module docstring for the precedence)."""
    cfg: BotConfig = ctx.policy.bot
    if not cfg.enabled:
        return None
    conv = ctx.conversation
    held = conv is not None and conv.state in _HELD
    if held and not cfg.while_human:
        return None
    state = _state(cfg, ctx.config)
    plan = state.shop(ctx.shop)
    meta = ctx.meta
    memory: dict[str, Any] | None = meta.get("bot")  # type: ignore[assignment]
    if memory is None:
        memory = meta["bot"] = {"answered": [], "last": None}

    kind: ReplyKind | None = None
    text = ""
    handoff = True
    faq: FaqEntry | None = None
    staffed: bool | None = None  # the shop open and someone online: asked once, when needed
    if not held:
        if ctx.skill in cfg.handoff_skills:
            kind, text = "skill", cfg.handoff_skills[ctx.skill]  # type: ignore[index]
        elif state.has_words:
            request, negative = state.asks(message.text)
            if request:
                kind, text = "request", cfg.handoff_reply
            elif negative:
                kind, text = "negative", cfg.negative_reply
    if kind is None and plan.match is not None and (not held or "faq" in cfg.while_human):
        match = plan.match(message.text)
        if match.outcome == "answer":
            entry = state.faq[match.entry]
            mode = entry.mode or plan.platform_mode  # mode_for, with the shop's part worked out once
            if mode == "suggest":
                staffed = ctx.staffed()
                if not staffed:
                    mode = "settle"  # nobody is there to click the suggestion: the buyer gets the answer now
            if mode == "suggest":
                _suggest(ctx, memory, plan, entry, message, "suggest")
            elif entry.id in memory["answered"] and cfg.repeat_handoff and not held:
                kind, text = "repeat", cfg.repeat_reply
                ctx.flag(f"bot:repeat:{entry.id}")
            else:
                faq = entry
                kind, text, handoff = "faq", entry.answer, held or mode == "answer_and_handoff"
                ctx.flag(f"bot:{mode}:{entry.id}")
        elif match.outcome == "suggest":
            entry = state.faq[match.entry]
            if entry.id in memory["answered"] and cfg.repeat_handoff and not held:
                kind, text = "repeat", cfg.repeat_reply  # 到底几天发货: asked again, more impatiently
                ctx.flag(f"bot:repeat:{entry.id}")
            else:
                _suggest(ctx, memory, plan, entry, message, "plausible")
    # whether the shop is offline is asked last: only a configured offline text needs it
    if (plan.offline and (kind is None or (kind != "faq" and handoff))
            and (not held or "offline" in cfg.while_human)):
        if staffed is None:
            staffed = ctx.staffed()
        if not staffed:
            kind, text, handoff = "offline", plan.offline, True
    if kind is None and conv is None:
        kind, text = "welcome", plan.welcome
    if kind is None or not text:
        return None
    reply = plan.fill(text, message.buyer, message.order)
    if reply == memory["last"]:
        if debug_enabled():
            log.debug("bot_repeat_suppressed", kind=kind)
        return None
    memory["last"] = reply
    if faq is not None and kind == "faq":
        memory["answered"].append(faq.id)
    if debug_enabled():
        log.debug("bot_reply", kind=kind, handoff=handoff, faq=faq.id if faq is not None else None)
    return BotReply(reply, handoff=handoff, kind=kind)


def _suggest(ctx: HookContext, memory: dict[str, Any], plan: _ShopBot, entry: FaqEntry, message: Message,
             why: Literal["suggest", "plausible"]) -> None:
    """Put ``entry``'s answer in the agent's composer: the decision is flagged
    ``bot:suggest:ID`` (a confident match in ``suggest`` mode) or ``bot:plausible:ID`` (a plausible
    match), and ``conversation.meta["bot"]["suggestion"]`` holds the filled text."""
    ctx.flag(f"bot:{why}:{entry.id}")
    text = plan.fill(entry.answer, message.buyer, message.order)
    memory["suggestion"] = {"faq": entry.id, "text": text, "why": why}


@hookimpl
def fenliu_policy_sections() -> Mapping[str, type[msgspec.Struct]]:
    return {"bot": BotConfig}


@hookimpl
def fenliu_configure(config: Config) -> None:
    """Validate the FAQ files and every policy's ``[bot]``, and build each policy's bot."""
    library = load_faq(config.dir, config.shops)
    vocab = build_vocabulary(config.dir)
    platforms = _platforms(config)
    known_platforms = typing.get_args(Platform)
    for entry_file, i, entry in library.located:
        for j, p in enumerate(entry.platforms):
            if p not in known_platforms:
                raise ConfigError(entry_file, f"faq[{i}].platforms[{j}]", f"unknown platform {p!r} (known: {', '.join(map(repr, known_platforms))})")
    for name, policy in config.policies.items():
        cfg: BotConfig = policy.bot
        file = str(config.policy_file(name))
        texts = [("welcome", cfg.welcome), ("offline", cfg.offline), ("handoff_reply", cfg.handoff_reply),
                 ("negative_reply", cfg.negative_reply), ("repeat_reply", cfg.repeat_reply)]
        texts += [(f"handoff_skills.{k}", v) for k, v in cfg.handoff_skills.items()]
        for sid, st in cfg.shops.items():
            if sid not in config.shops:
                raise ConfigError(file, f"bot.shops.{sid}", f"unknown shop {sid!r}")
            texts += [(f"shops.{sid}.{k}", v) for k, v in (("welcome", st.welcome), ("offline", st.offline)) if v]
        for key, text in texts:
            if (err := _check_template(file, f"bot.{key}", text)) is not None:
                raise err
        for i, group in enumerate(cfg.faq_groups):
            if group not in library.groups:
                known = ", ".join(repr(g) for g in sorted(library.groups)) or "—"
                raise ConfigError(file, f"bot.faq_groups[{i}]", f"no FAQ group {group!r} in {config.dir / 'faq'} (groups: {known})")
        for key, words in (("handoff_words", cfg.handoff_words), ("negative_words", cfg.negative_words)):
            for i, word in enumerate(words):
                if not word.strip():
                    raise ConfigError(file, f"bot.{key}[{i}]", "empty keyword")
        for p in cfg.platform_modes:
            if p not in known_platforms:
                raise ConfigError(file, f"bot.platform_modes.{p}", f"unknown platform {p!r} (known: {', '.join(map(repr, known_platforms))})")
        for key in ("answer_threshold", "suggest_threshold", "margin", "min_coverage"):
            if not 0.0 <= getattr(cfg, key) <= 1.0:
                raise ConfigError(file, f"bot.{key}", "must be between 0 and 1")
        if cfg.suggest_threshold > cfg.answer_threshold:
            raise ConfigError(file, "bot.suggest_threshold", f"must not exceed answer_threshold ({cfg.answer_threshold})")
        cfg.__dict__["state"] = _BotState(cfg, library, vocab, platforms)


fenliu_bot_reply = hookimpl(hook_alias(decide, "fenliu_bot_reply"))


__all__ = [
    "PLACEHOLDERS", "BotConfig", "FaqEntry", "Mode", "mode_for", "suggest_replies", "Suggestion", "FaqFile", "FaqLibrary", "QuickReply", "ShopTexts",
    "decide", "list_quick_replies", "load_faq", "placeholder_values", "render", "render_quick_reply",
    "suggest_quick_replies",
]
