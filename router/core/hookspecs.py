"""The hook contract between the router and its plugins.

Every hook is named ``fenliu_*``. An implementation may return its value directly or an
awaitable of it (an ``async def`` hook): the router awaits what needs awaiting, so write plain
functions unless you do I/O. Implementations may accept any prefix of the documented arguments
by name, as with any pluggy hook.

Inbound hooks run in this order for each message: ``fenliu_inbound_enrich`` →
``fenliu_inbound_filter`` → ``fenliu_classify_skill`` → ``fenliu_priority`` →
``fenliu_bot_reply`` → dispatch. A hook implementation that raises, or that overruns the
configured time budget (``plugins.hook_timeout_ms``), is logged, counted, flagged on the decision
as ``plugin_error:NAME`` and skipped; the message goes on.

``ctx`` is a :class:`router.core.context.HookContext`: the shop, its policy (with each plugin's
config section as an attribute, e.g. ``ctx.policy.sensitive``), the open conversation if any,
the clock, and the ``flags`` list a plugin may append findings to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import msgspec

    from router.core.config import Config
    from router.core.context import HookContext
    from router.core.models import BotReply, Decision, FilterVerdict, Message, Reply
    from policies import Strategy
    from router.core.models import Conversation

hookspec = pluggy.HookspecMarker("fenliu")
hookimpl = pluggy.HookimplMarker("fenliu")


@hookspec
def fenliu_policy_sections() -> Mapping[str, type[msgspec.Struct]]:
    """Declare the policy-file sections this plugin reads.

    Called once when plugins are loaded, before any configuration is validated. Return a mapping
    of section name to a ``msgspec.Struct`` type whose fields all have defaults; policy files may
    then contain ``[name]`` tables, validated against it (unknown keys and wrong types are
    reported as ``file: name.key: reason``). The validated section is ``ctx.policy.<name>``.
    All results are merged; two plugins claiming one name is a configuration error.
    """


@hookspec
def fenliu_strategies() -> Mapping[str, type[Strategy]]:
    """Register dispatch strategies by name.

    Called once when plugins are loaded. Return a mapping of strategy name (as used in a policy's
    ``dispatch.strategy``) to a :class:`policies.Strategy` subclass. All results are merged.
    """


@hookspec
def fenliu_configure(config: Config) -> None:
    """Prepare for a new configuration before it goes live.

    Called at start and on every reload, after validation and before the new configuration is
    swapped in. Build derived state here (automata, compiled patterns) so that the first message
    does not pay for it. Raise :class:`router.core.config.ConfigError` (or
    :class:`router.core.config.ConfigErrors` to report several at once) to reject the configuration;
    the running router then keeps its previous one. Return value ignored.
    """


@hookspec
def fenliu_inbound_enrich(message: Message, ctx: HookContext) -> Message | None:
    """Add context to an inbound message (buyer profile, order status, tags).

    Called first for every accepted, non-duplicate message. Return a new ``Message`` (made with
    ``msgspec.structs.replace``) to replace it for the later hooks, or ``None`` to leave it.
    All implementations run, each seeing the previous one's result.
    """


@hookspec
def fenliu_inbound_filter(message: Message, ctx: HookContext) -> FilterVerdict | None:
    """Check a buyer's message before an agent sees it.

    Called after enrichment. Return a :class:`router.core.models.FilterVerdict`: ``block`` stops the
    message (decision ``blocked``, never delivered), ``mask`` replaces the text the agent sees,
    ``flag`` only adds ``flags``; return ``None`` for a clean message. All implementations run;
    a block from any of them wins, masks apply in order. A blocking implementation that returns
    past its budget keeps its verdict (logged and flagged as an overrun): a dropped mask would
    fail open because the machine was busy.
    """


@hookspec(firstresult=True)
def fenliu_classify_skill(message: Message, ctx: HookContext) -> str | None:
    """Name the skill group (售前 ``presale``, 售后 ``aftersale``, 物流 ``logistics`` …) that
    should handle the conversation.

    Called for every message that was not blocked; ``ctx.conversation`` is the open conversation
    (with its current ``skill``) or ``None`` for a new one. Return the skill, or ``None`` to let
    another plugin decide. The first non-``None`` result wins. Returning a different skill for an
    open conversation moves it to that skill group when its agent lacks the skill.
    """


@hookspec
def fenliu_priority(message: Message, ctx: HookContext) -> int | None:
    """Contribute to the conversation's priority (higher is served first).

    Called after skill classification (``ctx.skill`` is set). Return an integer contribution or
    ``None``. All results are added up; the sum orders the queue, together with aging.
    """


@hookspec(firstresult=True)
def fenliu_bot_reply(message: Message, ctx: HookContext) -> BotReply | None:
    """Let a bot answer the buyer.

    Called after priority, for messages not blocked. Return a :class:`router.core.models.BotReply`:
    with ``handoff=False`` the bot settles the message (decision ``answered``, no human needed);
    with ``handoff=True`` the reply is sent and the conversation still goes to a human.
    Return ``None`` to stay silent. The first non-``None`` result wins.
    """


@hookspec
def fenliu_outbound_filter(reply: Reply, ctx: HookContext) -> FilterVerdict | None:
    """Check an agent's reply before it leaves through the shop's adapter.

    Called for every reply and by ``fenliu check-reply``. Return a ``FilterVerdict``: ``block``
    refuses the reply (the agent is shown ``reason`` and ``hits``), ``mask`` sends ``text``
    instead, ``None`` passes it. All implementations run; a block from any of them wins. An
    implementation that raises or overruns its budget blocks the reply (fail closed).
    """


@hookspec
def fenliu_assigned(decision: Decision, ctx: HookContext) -> None:
    """Observe a conversation being given to an agent (or queued again).

    Called after each ``assigned`` decision, including those caused by events (queue drain,
    transfer, expansion). Return value ignored. Use it for metrics, audit logs, notifications.
    On start, ``fenliu serve`` restores its newest snapshot and replays the journal entries
    after it through the router, calling this again for those assignments with ``ctx.replay``
    true: rebuild in-memory state then, but do not notify or append to an audit log a second
    time.
    """


@hookspec
def fenliu_closed(conversation: Conversation, ctx: HookContext) -> None:
    """Observe a conversation being closed.

    Called after a ``close`` event (agent, supervisor or buyer timeout) has released the
    conversation's agent, before the freed capacity drains the queue. ``conversation`` is the
    closed :class:`router.core.models.Conversation` with its history. Return value ignored.
    ``ctx.replay`` is true when the close is being replayed from the journal on start (see
    :func:`fenliu_assigned`).
    """


def hook_names() -> list[str]:
    """The names of all hooks, in the order they are documented."""
    return [name for name in globals() if name.startswith("fenliu_")]


def spec_signature(name: str) -> str:
    """``name(arg, …)``: the signature plugin authors implement, as the docs show it."""
    import inspect

    fn: Any = globals()[name]
    params = ", ".join(inspect.signature(fn).parameters)
    return f"{name}({params})"
