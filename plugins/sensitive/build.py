"""A ``[sensitive]`` section compiled into its filter: the lists read, one matcher per
direction (shared when both views hold the same keys, and reused across configurations with the
same content), the patterns compiled."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from plugins.sensitive.filter import SensitiveFilter
from plugins.sensitive.folding import normaliser
from plugins.sensitive.matcher import Matcher
from plugins.sensitive.rules import Rule
from plugins.sensitive.wordlists import read_lists

if TYPE_CHECKING:
    from plugins.sensitive.config import SensitiveConfig

#: Automata of the last configurations, by content: a reload (or a test building many configs)
#: with unchanged lists reuses the automaton instead of paying ≈0.2 s for a new one.
_recent: dict[tuple, Matcher] = {}


def build_filter(cfg: SensitiveConfig, base: Path, file: str, cache: dict) -> SensitiveFilter:
    """The filter of ``cfg``, its word files read relative to ``base`` (``file`` names the
    policy file in errors and warnings); ``cache`` shares matchers between the policies of one
    configuration."""
    read = read_lists(cfg, base, file, normaliser())
    collapse = set(cfg.collapse_repeats)
    patterns = [p for p in cfg.patterns if (p.inbound, p.outbound) != ("off", "off")]
    matchers: dict[str, Matcher] = {}
    compiled = [Rule(p) for p in patterns]
    rules = {"inbound": compiled, "outbound": compiled}
    for direction in ("inbound", "outbound"):
        on = direction in collapse
        triggers = tuple(sorted({x for p in patterns if p.on != "original" for x in p.requires}))
        key = (read.lists, read.allow, triggers, on)
        matcher = cache.get(key) or _recent.get(key)
        if matcher is None:
            matcher = Matcher(read.lists, read.allow, triggers, collapse=on, like=next(iter(matchers.values()), None))
        cache[key] = _recent[key] = matchers[direction] = matcher
    while len(_recent) > 8:
        del _recent[next(iter(_recent))]
    actions = dict(read.actions)
    for p in patterns:
        actions[p.name] = (p.inbound, p.outbound)
    return SensitiveFilter(matchers, actions, rules, cfg.mask_char, cfg.enabled, read.replace, read.warnings)
