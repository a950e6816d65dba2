"""The routing hooks of one message in one synchronous call, for built-in implementations.

The five inbound loops of :class:`router.core.plugins.PluginSet` are coroutines, because a
third-party implementation may return an awaitable. With the demo's rules the four that run
cost about as much in coroutines, loops and clock readings as the built-in plugins' own work.
When every routing implementation is a built-in one (:attr:`PluginSet.plain_routing`; none of
them returns an awaitable), ``PluginSet.inbound`` runs the filters, the skill classifiers, the
priority bumps and the bot in one plain call, with the same isolation: an implementation that
raises, overruns its budget (the collector's pauses not counted) or returns the wrong type is
logged, counted, flagged ``plugin_error:NAME`` and recorded in ``ctx.dropped``; an inbound
filter's late verdict is kept (see ``PluginSet._slow_kept``).

The call is generated for each set of chains (:func:`compile_inbound`, when the plugin set
resolves its chains or a replay skips some calls), with the implementations unrolled: no loop
over a chain, no attribute look-up per call. It reads the clock once per call instead of
twice: a call's start is the previous call's end (the few assignments between two calls are
charged to the later one; after a fault, which logs, the clock is read again).
"""

from __future__ import annotations

import gc
import linecache
import textwrap
from collections import deque
from collections.abc import Callable, Sequence
from itertools import count
from time import perf_counter
from typing import TYPE_CHECKING, Any

from router.core.models import BotReply, FilterVerdict

if TYPE_CHECKING:
    from router.core.context import HookContext
    from router.core.models import Message
    from router.core.plugins import PluginSet, _Impl

#: Recent garbage-collector pauses as ``(start, stop)`` perf-counter pairs. A hook's budget
#: measures the hook, not the collector: a collection that lands inside a call would otherwise
#: charge it, and an inbound filter (the sensitive-word mask) would fail open for a reason that
#: has nothing to do with it. Recorded by a ``gc.callbacks`` entry and only read when a call
#: looks late, so the hot path pays nothing for it.
_gc_pauses: deque[tuple[float, float]] = deque(maxlen=256)
_gc_start = [0.0]


def _gc_watch(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_start[0] = perf_counter()
    else:
        _gc_pauses.append((_gc_start[0], perf_counter()))


if _gc_watch not in gc.callbacks:
    gc.callbacks.append(_gc_watch)


def gc_pause_within(start: float, end: float) -> float:
    """Seconds the collector ran between ``start`` and ``end`` (perf-counter readings)."""
    total = 0.0
    for a, b in reversed(_gc_pauses):
        if b <= start:
            break
        total += min(b, end) - max(a, start)
    return total


def _overran(start: float, budget: float) -> bool:
    """Whether a call that started at ``start`` used more than ``budget`` seconds of its own,
    the collector's pauses during it not counted."""
    end = perf_counter()
    return end - start - gc_pause_within(start, end) > budget


Inbound = Callable[["Message", "HookContext"], "FilterVerdict | BotReply | None"]

#: One implementation's call, its isolation and its clock reading; ``{n}`` numbers it.
_CALL = """\
try:
    result = c{n}(message, ctx)
except Exception as exc:  # isolation is the point
    plugins._fault(i{n}, {hook!r}, ctx, type(exc).__name__, str(exc))
    result = None
    now = perf_counter()
else:
    now = perf_counter()
    if now - start > timeout and _overran(start, timeout):
        {late}
        now = perf_counter()
start = now
"""

#: What each hook does with a result (``{n}``, ``{hook}`` as above). The first skill named wins,
#: so the next classifier's call nests under ``{next}``; the bot returns its first reply.
_USE = {
    "fenliu_inbound_filter": """\
if result is not None:
    if isinstance(result, FilterVerdict):
        for f in result.flags:
            ctx.flag(f)
        if result.action == "block":
            return result
        if result.action == "mask" and result.text is not None:
            ctx.text = result.text
    else:
        plugins._fault(i{n}, {hook!r}, ctx, "TypeError", "did not return a FilterVerdict")
        start = perf_counter()
""",
    "fenliu_classify_skill": """\
if result is not None:
    skill = result if type(result) is str else str(result)
else:
{next}""",
    "fenliu_priority": """\
if result is not None:
    if type(result) is int:
        total += result
    else:
        try:
            total += int(result)
        except (TypeError, ValueError):
            plugins._fault(i{n}, {hook!r}, ctx, "TypeError", "did not return an int")
            start = perf_counter()
""",
    "fenliu_bot_reply": """\
if isinstance(result, BotReply):
    return result
if result is not None:
    plugins._fault(i{n}, {hook!r}, ctx, "TypeError", "did not return a BotReply")
    start = perf_counter()
""",
}

_LATE = {"fenliu_inbound_filter": "plugins._slow_kept(i{n}, {hook!r}, ctx)"}
_numbers = count()


def _chain(hook: str, first: int, size: int) -> str:
    """The unrolled calls of one hook's ``size`` implementations, numbered from ``first``."""
    out = ""
    for n in reversed(range(first, first + size)):  # innermost first: a stopping hook nests the rest
        late = _LATE.get(hook, "result = plugins._late(i{n}, {hook!r}, ctx)").format(n=n, hook=hook)
        call = _CALL.format(n=n, hook=hook, late=late)
        use = _USE[hook].format(n=n, hook=hook, next=textwrap.indent(out, "    ") if out else "    pass\n")
        out = call + use if "{next}" in _USE[hook] else call + use + out
    return out


def compile_inbound(plugins: PluginSet, chains: Sequence[Sequence[_Impl]]) -> Inbound:
    """The routing hooks of ``chains`` (filter, skill, priority and bot implementations, in call
    order) as one function of ``(message, ctx)`` that returns a blocking verdict (when a filter
    blocked: nothing else runs), else the bot's reply or ``None``. It sets ``ctx.text`` (masks),
    ``ctx.flags``, ``ctx.skill`` (the first skill named, else the conversation's, else the
    policy's ``dispatch.default_skill``, as the pipeline sets it) and ``ctx.priority`` (the sum
    of the bumps, when any plugin implements the hook)."""
    hooks = ("fenliu_inbound_filter", "fenliu_classify_skill", "fenliu_priority", "fenliu_bot_reply")
    impls = [impl for chain in chains for impl in chain]
    body, n = "timeout = plugins.timeout\nstart = perf_counter()\n", 0
    for hook, chain in zip(hooks, chains, strict=True):
        if hook == "fenliu_classify_skill":
            body += "skill = None\n"
        elif hook == "fenliu_priority" and chain:
            body += "total = 0\n"
        body += _chain(hook, n, len(chain))
        n += len(chain)
        if hook == "fenliu_classify_skill":
            body += "ctx.skill = skill or ctx.skill or ctx.policy.dispatch.default_skill\n"
        elif hook == "fenliu_priority" and chain:
            body += "ctx.priority = total\n"
    body += "return None\n"
    names = ", ".join(f"c{k}, i{k}" for k in range(len(impls)))
    source = (f"def make(plugins{', ' if names else ''}{names}):\n"
              f"    def inbound(message, ctx):\n{textwrap.indent(body, ' ' * 8)}    return inbound\n")
    filename = f"<fenliu inbound hooks {next(_numbers)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"perf_counter": perf_counter, "_overran": _overran, "FilterVerdict": FilterVerdict,
                                 "BotReply": BotReply}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - our own template
    args = [x for impl in impls for x in (impl.call, impl)]
    fn: Inbound = namespace["make"](plugins, *args)
    return fn
