"""A test plugin for dispatch tests: ``[skill] text`` sets the skill, ``!N`` adds priority N.

Enabled by dotted path (``enabled = ["tests.policies.tagging"]``) in the generated configs, so
the dispatch tests do not depend on the built-in classifier's rules.
"""

import re

from router.core.hookspecs import hookimpl

_SKILL = re.compile(r"^\[(\w+)\]")
_PRIO = re.compile(r"!(\d+)")


@hookimpl(tryfirst=True)
def fenliu_classify_skill(message, ctx):
    m = _SKILL.match(message.text)
    return m.group(1) if m else None


@hookimpl
def fenliu_priority(message, ctx):
    m = _PRIO.search(message.text)
    return int(m.group(1)) if m else None
