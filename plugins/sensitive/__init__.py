"""Built-in plugin ``sensitive``: forbidden and sensitive words, inbound and outbound.

Buyers try to pull a chat off the platform (加我微信, ＶＸ, 微-信, 支付寶) and agents must never
answer with contact details or absolute advertising claims (最好, 第一), which platforms punish.
Word lists (``config/words/*.txt``) are matched with one ahocorasick-rs automaton per distinct
set of lists, built in ``fenliu_configure`` and swapped with the configuration on reload.

Matching runs on a *normalised* text so evasions collapse onto the listed word: NFKC (full-width
→ half-width), lower case, every letter and digit form Unicode knows (circled, bracketed,
negative-squared letters by their names; ❶ ➀ ⓵ Ⅳ and Chinese numerals by their numeric values),
separators (spaces, punctuation, symbols, emoji, zero-width characters) removed, traditional →
simplified (a character table built once from ``opencc`` t2s). For the word scan of the
directions that ask for it, repeated characters are collapsed too (fffuuuck, 五五星星红红旗旗);
patterns always see the text uncollapsed. Speed: see ``bench/bench_sensitive.py`` and
docs/plugins/sensitive.md.

The modules, in the order a text meets them:

- :mod:`~plugins.sensitive.config`: the ``[sensitive]`` section (lists, allow phrases, patterns,
  actions), with the built-in :mod:`~plugins.sensitive.detectors`;
- :mod:`~plugins.sensitive.wordlists`: the word files read and checked;
- :mod:`~plugins.sensitive.build`: the section compiled into a :class:`SensitiveFilter`;
- :mod:`~plugins.sensitive.folding`: the character table (applied in C by ``plugins._fold``
  when it was built, else in Python) and the positions back in the original text;
- :mod:`~plugins.sensitive.matcher`: the automaton scan and the split of its matches;
- :mod:`~plugins.sensitive.rules`: the patterns compiled, with the gates that skip them;
- :mod:`~plugins.sensitive.filter`: the hits in the original text, masks and verdicts.

This module holds the plugin's hooks and the names tools and tests import.
"""

from __future__ import annotations

import time
from array import array as array  # re-exported: tests build a ``Folder`` table with it
from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec
import structlog

from plugins.sensitive.config import (
    DEFAULT_PATTERNS,
    Direction,
    InboundAction,
    OutboundAction,
    Pattern,
    SensitiveConfig,
    WordList,
)
from plugins.sensitive.detectors import Detector
from plugins.sensitive.filter import SensitiveFilter
from plugins.sensitive.folding import CN_DIGITS, EAGER, Folder, Normaliser, normalise, normalise_words, normaliser
from plugins.sensitive.matcher import Matcher, Owner
from plugins.sensitive.rules import min_ascii, min_run
from plugins.sensitive.wordlists import Entry, parse_entry
from router.core.hookspecs import hookimpl
from router.core.models import FilterVerdict, Hit

if TYPE_CHECKING:
    from router.core.config import Config
    from router.core.context import HookContext
    from router.core.models import Message, Reply

log = structlog.get_logger("fenliu.sensitive")


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
    "CN_DIGITS", "DEFAULT_PATTERNS", "EAGER", "Detector", "Direction", "Entry", "Folder", "InboundAction", "Matcher",
    "Normaliser", "OutboundAction", "Owner", "Pattern", "SensitiveConfig", "SensitiveFilter", "WordList", "check_text",
    "min_ascii", "min_run", "normalise", "normalise_words", "normaliser", "parse_entry",
]
