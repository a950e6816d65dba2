"""Loading plugins and calling their hooks.

:class:`PluginSet` owns one pluggy ``PluginManager``. At load time (and on every reload) it
resolves each hook's implementations into a plain tuple in pluggy's call order, so the hot path
calls functions directly (≈0.3 µs for four) instead of going through ``pm.hook`` (≈3 µs) — and
so each call can be isolated: an implementation that raises or overruns its time budget is
logged, counted, flagged ``plugin_error:NAME`` and skipped. The core calls hooks only through the
typed methods of this class.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import linecache
import math
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import entry_points
from time import perf_counter
from types import FunctionType, ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import msgspec
import pluggy
import structlog

from router.core import hookspecs, i18n
from router.core.errors import ConfigError, ConfigErrors
from router.core.inbound import Inbound, _overran, compile_inbound, gc_pause_within
from router.core.models import BotReply, FilterVerdict, Message
from router.core.textcache import (  # noqa: F401  (re-exported: plugins written before textcache import them here)
    TEXT_CACHE_MAX_CHARS,
    TEXT_CACHE_SIZE,
    clear_text_caches,
    text_cache,
    text_cache_stats,
)

if TYPE_CHECKING:
    from router.core.config import Config
    from router.core.context import HookContext

ENTRY_POINT_GROUP = "fenliu"

#: The built-in plugins, registered in this order (later ones are called first, as in pluggy).
BUILTIN_PLUGINS: tuple[str, ...] = (
    "policies.round_robin",
    "policies.least_load",
    "policies.weighted",
    "policies.deadline",
    "plugins.vip",
    "plugins.skills",
    "plugins.bot",
    "plugins.sensitive",
)
_BUILTIN_MODULES = frozenset(BUILTIN_PLUGINS)

log = structlog.get_logger("fenliu.plugins")

def hook_alias(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A copy of the function ``fn`` called ``name``, for a plugin to mark as its hook
    implementation (``fenliu_x = hookimpl(hook_alias(x, "fenliu_x"))``): the hook then runs
    ``x``'s body itself, one Python call less per message than a ``fenliu_x`` that calls ``x``,
    while ``x`` stays an unmarked public function (pluggy registers every marked attribute of a
    plugin, so one function object cannot be both)."""
    copy = FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__annotations__ = fn.__annotations__
    copy.__doc__ = fn.__doc__
    copy.__module__ = fn.__module__
    copy.__qualname__ = name
    return copy


class PluginInfo(msgspec.Struct):
    """What ``fenliu plugins`` shows about one plugin."""

    name: str
    origin: str
    module: str
    hooks: list[str]
    status: str = "loaded"


#: Result types the inbound hooks return plainly: certainly not awaitables (see ``_settle``).
_PLAIN = frozenset((type(None), str, int, bool, Message, FilterVerdict, BotReply))
#: The hooks whose results decide a message's routing, by the attribute holding their chain
#: (filled by :func:`_inbound_loop`, one entry per loop).
_ROUTING_CHAINS: dict[str, str] = {}


class _Pending:
    """An awaitable returned by a hook implementation, with the time its call started."""

    __slots__ = ("awaitable", "start")

    def __init__(self, awaitable: Any, start: float) -> None:
        self.awaitable = awaitable
        self.start = start


class _Impl:
    """One resolved hook implementation, callable with the spec's full argument list;
    ``builtin``: a plain function of a built-in plugin (never returns an awaitable)."""

    __slots__ = ("plugin", "call", "builtin")

    def __init__(self, plugin: str, call: Callable[..., Any], builtin: bool = False) -> None:
        self.plugin = plugin
        self.call = call
        self.builtin = builtin


def _binder(impl: pluggy.HookImpl, spec_args: tuple[str, ...]) -> Callable[..., Any]:
    fn = impl.function
    names = tuple(impl.argnames)
    if names == spec_args[: len(names)]:
        if len(names) == len(spec_args):
            return fn
        n = len(names)
        return lambda *args: fn(*args[:n])
    index = [spec_args.index(a) for a in names]
    return lambda *args: fn(*[args[i] for i in index])


#: The one shape of the five inbound loops. They run for every message, and a loop that called
#: a per-hook function to combine each result (or awaited a shared loop) costs ≈ 10 % of routing
#: a message, so each hook's loop is generated from this template at import: ``{start}`` sets
#: up the result, ``{late}`` handles a plain result that overran its budget, ``{use}`` takes a
#: result that is not ``None`` (it may ``continue`` or ``return``), ``{end}`` is the outcome.
_LOOP = """\
async def {name}(self, message, ctx):
    hook = {hook!r}
    {start}
    for impl in self.{chain}:
        start = perf_counter()
        try:
            result = impl.call(message, ctx)
        except Exception as exc:  # isolation is the point
            self._fault(impl, hook, ctx, type(exc).__name__, str(exc))
            continue
        if result is None:  # the commonest answer: only the budget to check
            if perf_counter() - start > self.timeout and _overran(start, self.timeout):
                {late}
            continue
        if type(result) not in _PLAIN:
            result = await self._settle(impl, hook, ctx, result, start)
        elif perf_counter() - start > self.timeout and _overran(start, self.timeout):
            {late}
        if result is None:
            continue
{use}
    return {end}
"""


def _inbound_loop(name: str, hook: str, chain: str, *, use: str, doc: str, start: str = "pass",
                  end: str = "None", late: str = "result = self._late(impl, hook, ctx)") -> Callable[..., Any]:
    """The method ``name`` walking ``self.<chain>`` (the implementations of ``hook``), built
    from :data:`_LOOP`. Its source is put in ``linecache`` so tracebacks show it."""
    body = textwrap.indent(textwrap.dedent(use).strip("\n"), " " * 8)
    source = _LOOP.format(name=name, hook=hook, chain=chain, start=start, late=late, use=body, end=end)
    filename = f"<fenliu inbound loop {hook}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), globals(), namespace)  # noqa: S102 - our own template
    fn = namespace[name]
    fn.__doc__ = doc
    fn.__qualname__ = f"PluginSet.{name}"
    _ROUTING_CHAINS[hook] = chain
    return fn


class PluginsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``fenliu.toml``'s ``[plugins]`` table (defined here, beside what reads it, so the
    configuration module imports the plugin machinery and not the other way round)."""

    enabled: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    hook_timeout_ms: Annotated[float, msgspec.Meta(gt=0, le=60_000)] = 50.0

class PluginSet:
    """The loaded plugins, their config sections and strategies, and the resolved hook chains."""

    #: The routing hooks' chains (:data:`_ROUTING_CHAINS`), set by :meth:`resolve`.
    _enrich: tuple[_Impl, ...]
    _filter: tuple[_Impl, ...]
    _skill: tuple[_Impl, ...]
    _priority: tuple[_Impl, ...]
    _bot: tuple[_Impl, ...]
    #: The routing hooks of one message in one plain call, compiled for the chains by
    #: :meth:`resolve` (see router.core.inbound); used only when :attr:`plain_routing`.
    inbound: Inbound

    def __init__(self, timeout_ms: float = 50.0) -> None:
        self.pm = pluggy.PluginManager("fenliu")
        self.pm.add_hookspecs(hookspecs)
        self.timeout = timeout_ms / 1000.0
        self.infos: list[PluginInfo] = []
        self.errors: Counter[str] = Counter()
        self.sections: dict[str, type] = {}
        self._inert_sections: dict[str, type] = {}
        self.strategies: dict[str, type] = {}
        self._chains: dict[str, tuple[_Impl, ...]] = {}
        self.has_observers = False
        self.plain_routing = False
        self._inbound_by_chains: dict[tuple[tuple[_Impl, ...], ...], Inbound] = {}
        self.extra: tuple[object, ...] = ()

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        settings: PluginsConfig | None = None,
        *,
        errors: list[ConfigError] | None = None,
        config_file: Any = "fenliu.toml",
        extra: Iterable[object] = (),
    ) -> PluginSet:
        """Built-ins (minus ``disabled``), then the ``enabled`` third-party plugins, then
        ``extra`` plugin objects (the test harness uses these)."""
        settings = settings or PluginsConfig()
        errors = errors if errors is not None else []
        self = cls(settings.hook_timeout_ms)
        self.extra = tuple(extra)
        for modname in BUILTIN_PLUGINS:
            short = modname.rsplit(".", 1)[1]
            if short in settings.disabled or modname in settings.disabled:
                self.infos.append(PluginInfo(short, "builtin", modname, [], "disabled"))
                self._keep_sections(modname)
                continue
            try:
                module = importlib.import_module(modname)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the router
                self._failed(short, exc, "builtin")
                continue
            self.register(module, short, "builtin")
        self._load_third_party(settings, errors, config_file)
        for i, obj in enumerate(extra):
            name = getattr(obj, "__name__", None) or f"{type(obj).__name__}-{i}"
            self.register(obj, name, "test")
        self._collect(errors, config_file)
        self.resolve()
        return self

    def _load_third_party(self, settings: PluginsConfig, errors: list[ConfigError], config_file: Any) -> None:
        found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        wanted = list(found) if "*" in settings.enabled else list(settings.enabled)
        for ep_name, ep in sorted(found.items()):
            if ep_name not in wanted:
                dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else ep.value
                self.infos.append(PluginInfo(ep_name, f"entry point ({dist})", ep.value, _declared_hooks(ep), "not enabled"))
        for i, name in enumerate(wanted):
            if name == "*" or name in settings.disabled:
                continue
            ep = found.get(name)
            try:
                if ep is not None:
                    obj = ep.load()
                    origin = f"entry point ({ep.dist.name} {ep.dist.version})" if ep.dist else "entry point"
                elif "." in name or name.isidentifier():
                    obj = importlib.import_module(name)
                    origin = "module"
                else:
                    raise ImportError(f"no plugin named {name!r}")
            except ModuleNotFoundError as exc:
                if ep is None and exc.name == name.split(".")[0]:
                    known = ", ".join(repr(f) for f in sorted(found)) or "—"
                    errors.append(ConfigError(config_file, f"plugins.enabled[{i}]",
                                              f"no plugin named {name!r} (entry points: {known})"))
                    continue
                self._failed(name, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the router
                self._failed(name, exc)
                continue
            self.register(obj, name, origin)

    def _keep_sections(self, modname: str) -> None:
        """A disabled built-in's policy sections stay known (and validated), so switching a
        plugin off is one line in ``fenliu.toml``, not an edit of every policy file; nothing of
        the plugin runs."""
        try:
            declare = getattr(importlib.import_module(modname), "fenliu_policy_sections", None)
            sections = declare() if declare is not None else {}
        except Exception:  # noqa: BLE001 - it is disabled: a broken import only loses the leniency
            return
        self._inert_sections.update(sections or {})

    def _failed(self, name: str, exc: BaseException, origin: str = "third-party") -> None:
        log.error("plugin_load_failed", plugin=name, error=f"{type(exc).__name__}: {exc}")
        self.errors[name] += 1
        self.infos.append(PluginInfo(name, origin, name, [], f"failed: {type(exc).__name__}: {exc}"))

    def register(self, obj: object, name: str, origin: str = "test") -> None:
        try:
            self.pm.register(obj, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            self._failed(name, exc)
            return
        module = obj.__name__ if isinstance(obj, ModuleType) else type(obj).__module__
        hooks = sorted(c.name for c in self.pm.get_hookcallers(obj) or ())
        self.infos.append(PluginInfo(name, origin, module, hooks))

    def _collect(self, errors: list[ConfigError], config_file: Any) -> None:
        for name, hook in (("sections", self.pm.hook.fenliu_policy_sections),
                           ("strategies", self.pm.hook.fenliu_strategies)):
            target: dict[str, type] = getattr(self, name)
            for impl in hook.get_hookimpls():
                try:
                    result = impl.function()
                except Exception as exc:  # noqa: BLE001
                    self._failed(impl.plugin_name, exc)
                    continue
                for key, value in (result or {}).items():
                    if key in target and target[key] is not value:
                        errors.append(ConfigError(config_file, "plugins", f"{name[:-1]} {key!r} is declared by two plugins"))
                    target[key] = value
        for key, value in self._inert_sections.items():
            self.sections.setdefault(key, value)

    def resolve(self) -> None:
        """(Re)build the call chains from the registered implementations."""
        chains = {}
        for name in hookspecs.hook_names():
            caller = getattr(self.pm.hook, name)
            spec_args = tuple(caller.spec.argnames) if caller.spec else ()
            impls = []
            for impl in reversed(caller.get_hookimpls()):
                if impl.hookwrapper or impl.wrapper:
                    log.warning("plugin_wrapper_ignored", plugin=impl.plugin_name, hook=name)
                    continue
                fn = impl.function
                builtin = getattr(fn, "__module__", None) in _BUILTIN_MODULES and not inspect.iscoroutinefunction(fn)
                impls.append(_Impl(impl.plugin_name, _binder(impl, spec_args), builtin))
            chains[name] = tuple(impls)
        self._chains = chains
        for hook, attr in _ROUTING_CHAINS.items():
            setattr(self, attr, chains[hook])
        #: every routing hook is implemented by built-in functions only (and none enriches), so
        #: :attr:`inbound` may run them in one plain call
        self.plain_routing = not self._enrich and all(
            i.builtin for attr in _ROUTING_CHAINS.values() for i in getattr(self, attr))
        self._inbound_by_chains = {}
        self._compile_inbound()
        self._outbound = chains["fenliu_outbound_filter"]
        self._assigned = chains["fenliu_assigned"]
        self._closed = chains["fenliu_closed"]
        self.has_observers = bool(self._assigned or self._closed)

    def _compile_inbound(self) -> None:
        """:attr:`inbound` for the current chains (compiled once per set of chains: a replay
        that skips calls swaps them)."""
        key = (self._filter, self._skill, self._priority, self._bot)
        fn = self._inbound_by_chains.get(key)
        if fn is None:
            fn = self._inbound_by_chains[key] = compile_inbound(self, key)
        self.inbound = fn

    def chain(self, hook: str) -> tuple[str, ...]:
        """The plugin names implementing ``hook``, in call order."""
        return tuple(i.plugin for i in self._chains[hook])

    def configure(self, config: Config, errors: list[ConfigError]) -> None:
        for impl in self._chains["fenliu_configure"]:
            try:
                impl.call(config)
            except ConfigError as exc:
                errors.append(exc)
            except ConfigErrors as exc:
                errors.extend(exc.errors)
            except Exception as exc:  # noqa: BLE001
                errors.append(ConfigError(config.dir, f"plugins.{impl.plugin}", f"configure failed: {type(exc).__name__}: {exc}"))

    # -- isolated calls ------------------------------------------------------------------------
    #
    # ``_call`` is synchronous so that the common case (a plain function) costs no coroutine;
    # an implementation that returned an awaitable comes back wrapped in ``_Pending`` and the
    # hook method awaits it under the remaining time budget.

    def _call(self, impl: _Impl, hook: str, ctx: HookContext | None, *args: Any) -> Any:
        start = perf_counter()
        try:
            result = impl.call(*args)
        except Exception as exc:  # noqa: BLE001 - isolation is the point
            self._fault(impl, hook, ctx, type(exc).__name__, str(exc))
            return None
        if result is not None and hasattr(type(result), "__await__"):
            return _Pending(result, start)
        if perf_counter() - start > self.timeout and _overran(start, self.timeout):
            self._fault(impl, hook, ctx, "timeout", f"over its {self.timeout * 1000:.0f} ms budget")
            return None
        return result

    async def _finish(self, impl: _Impl, hook: str, ctx: HookContext | None, pending: _Pending) -> Any:
        try:
            now = perf_counter()
            spent = now - pending.start - gc_pause_within(pending.start, now)
            with anyio.fail_after(max(self.timeout - spent, 0.0)):
                return await pending.awaitable
        except TimeoutError:
            self._fault(impl, hook, ctx, "timeout", f"over its {self.timeout * 1000:.0f} ms budget")
        except Exception as exc:  # noqa: BLE001
            self._fault(impl, hook, ctx, type(exc).__name__, str(exc))
        return None

    def _fault(self, impl: _Impl, hook: str, ctx: HookContext | None, kind: str, detail: str) -> None:
        self.errors[impl.plugin] += 1
        log.warning("plugin_error", plugin=impl.plugin, hook=hook, error=kind, detail=detail)
        if ctx is not None:
            ctx.flag(f"plugin_error:{impl.plugin}")
            ctx.dropped.append((hook, impl.plugin))

    async def _run(self, impl: _Impl, hook: str, ctx: HookContext | None, *args: Any) -> Any:
        result = self._call(impl, hook, ctx, *args)
        if type(result) is _Pending:
            return await self._finish(impl, hook, ctx, result)
        return result

    # The five inbound hooks run for every message, so their loops (generated from ``_LOOP``,
    # above the class) inline the isolation of ``_call`` (a timer read before and after, the
    # exception guard) and leave only the rare cases to helpers: a result that may be an
    # awaitable (``_settle``), an overrun (``_late``, or ``_slow_kept`` for a filter's verdict).

    async def _settle(self, impl: _Impl, hook: str, ctx: HookContext, result: Any, start: float) -> Any:
        """A result of a type no hook returns plainly: await it if it is an awaitable (under the
        remaining budget), else check the budget like a plain result."""
        if hasattr(type(result), "__await__"):
            return await self._finish(impl, hook, ctx, _Pending(result, start))
        if perf_counter() - start > self.timeout and _overran(start, self.timeout):
            return self._late(impl, hook, ctx)
        return result

    @contextlib.contextmanager
    def without_budget(self) -> Iterator[None]:
        """Run hooks without their wall-clock budget for the duration: for inputs whose outcome
        must not depend on how busy the machine is (journal replay, a simulation on a virtual
        clock), where an overrun would drop a result the live run or the same seed gave."""
        budget, self.timeout = self.timeout, math.inf
        try:
            yield
        finally:
            self.timeout = budget

    @contextlib.contextmanager
    def skipping(self, dropped: Iterable[tuple[str, str]]) -> Iterator[None]:
        """Leave out the given ``(hook, plugin)`` implementations of the routing hooks for the
        duration: journal replay skips exactly the calls whose results the live run dropped (an
        overrun or a failure need not happen again on replay, an applied result must not appear
        there). Swaps the chains, so the hooks' loops pay nothing for it."""
        saved = {}
        for hook, plugin in dropped:
            attr = _ROUTING_CHAINS.get(hook)
            if attr is None:
                continue
            saved.setdefault(attr, getattr(self, attr))
            setattr(self, attr, tuple(i for i in getattr(self, attr) if i.plugin != plugin))
        if saved:
            self._compile_inbound()
        try:
            yield
        finally:
            for attr, chain in saved.items():
                setattr(self, attr, chain)
            if saved:
                self._compile_inbound()

    def _late(self, impl: _Impl, hook: str, ctx: HookContext | None) -> None:
        """An implementation overran its budget: its result is dropped."""
        self._fault(impl, hook, ctx, "timeout", f"over its {self.timeout * 1000:.0f} ms budget")

    def _slow_kept(self, impl: _Impl, hook: str, ctx: HookContext) -> None:
        """A blocking inbound filter returned past its budget: the time is spent either way, and
        dropping its verdict would only show the agent unmasked text (fail open because the
        machine was busy). So the verdict is kept, and the overrun logged, counted and flagged like
        any other; it is not named among the dropped calls, so a replay applies it as the live run
        did."""
        self.errors[impl.plugin] += 1
        log.warning("plugin_error", plugin=impl.plugin, hook=hook, error="timeout",
                    detail=f"over its {self.timeout * 1000:.0f} ms budget; its verdict was kept")
        ctx.flag(f"plugin_error:{impl.plugin}")

    inbound_enrich = _inbound_loop(
        "inbound_enrich", "fenliu_inbound_enrich", "_enrich", end="message",
        doc="Let every enricher replace the message in turn.",
        use="""
            if isinstance(result, Message):
                message = result
            else:
                self._fault(impl, hook, ctx, "TypeError", "did not return a Message")
        """)
    inbound_filter = _inbound_loop(
        "inbound_filter", "fenliu_inbound_filter", "_filter", start="last = None", end="last",
        late="self._slow_kept(impl, hook, ctx)",
        doc="Run every filter; return the first ``block``, else the last verdict (masks applied to "
            "``ctx.text`` in turn, flags added to ``ctx.flags``).",
        use="""
            if not isinstance(result, FilterVerdict):
                self._fault(impl, hook, ctx, "TypeError", "did not return a FilterVerdict")
                continue
            for f in result.flags:
                ctx.flag(f)
            if result.action == "block":
                return result
            if result.action == "mask" and result.text is not None:
                ctx.text = result.text
            last = result
        """)
    classify_skill = _inbound_loop(
        "classify_skill", "fenliu_classify_skill", "_skill",
        doc="The first skill a classifier names, else ``None``.",
        use="""
            return str(result)
        """)
    priority = _inbound_loop(
        "priority", "fenliu_priority", "_priority", start="total = 0", end="total",
        doc="The sum of every priority bump.",
        use="""
            if type(result) is int:
                total += result
            else:
                try:
                    total += int(result)
                except (TypeError, ValueError):
                    self._fault(impl, hook, ctx, "TypeError", "did not return an int")
        """)
    bot_reply = _inbound_loop(
        "bot_reply", "fenliu_bot_reply", "_bot",
        doc="The first bot reply, else ``None``.",
        use="""
            if isinstance(result, BotReply):
                return result
            self._fault(impl, hook, ctx, "TypeError", "did not return a BotReply")
        """)

    async def outbound_filter(self, reply: Any, ctx: HookContext) -> list[FilterVerdict]:
        """Every outbound verdict. Unlike the inbound side this fails closed: a filter that
        raises or overruns its budget blocks the reply, because sending an unchecked reply can
        cost the shop a platform penalty, while the agent can simply send it again."""
        out = []
        for impl in self._outbound:
            before = self.errors[impl.plugin]
            v = await self._run(impl, "fenliu_outbound_filter", ctx, reply, ctx)
            if isinstance(v, FilterVerdict):
                out.append(v)
            elif self.errors[impl.plugin] != before:
                out.append(FilterVerdict("block", flags=(f"plugin_error:{impl.plugin}",),
                                         reason=i18n._("the {plugin} check failed, so the reply was not sent; try again",
                                                       plugin=impl.plugin)))
        return out

    async def assigned(self, decision: Any, ctx: HookContext) -> None:
        for impl in self._assigned:
            await self._run(impl, "fenliu_assigned", ctx, decision, ctx)

    async def closed(self, conversation: Any, ctx: HookContext) -> None:
        for impl in self._closed:
            await self._run(impl, "fenliu_closed", ctx, conversation, ctx)


    def describe(self) -> list[PluginInfo]:
        return list(self.infos)


def _declared_hooks(ep: Any) -> list[str]:
    """The hooks an installed but not enabled plugin implements, for ``fenliu plugins``."""
    try:
        obj = ep.load()
    except Exception:  # noqa: BLE001 - listing must not fail on a broken plugin
        return []
    return sorted(n for n in dir(obj) if n.startswith("fenliu_") and hasattr(getattr(obj, n), "fenliu_impl"))
