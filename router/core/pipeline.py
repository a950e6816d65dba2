"""The routing pipeline: ingest → hooks → dispatch, for one message or event at a time.

:class:`Router` is the one object ``route``, ``simulate`` and ``serve`` all drive, so there is a
single implementation of routing. It does no I/O: storage and transport live in the service.
Calls must not overlap (the service feeds it from one task), which is what makes a reload
"between messages" atomic: :meth:`Router.reload` swaps config, plugin chains and policies in one
synchronous step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec
import structlog

from router.core.config import Config
from router.core.context import HookContext
from router.core.dedupe import SeenIds
from router.core.i18n import _
from router.core.dispatch import DispatchError, Dispatcher
from router.core.logging import bind_message, unbind
from router.core.models import (
    AcceptEvent,
    AgentStatusEvent,
    CloseEvent,
    Conversation,
    Decision,
    Event,
    FilterVerdict,
    Message,
    OutboundResult,
    RatingEvent,
    Reply,
    TickEvent,
    TransferEvent,
)

if TYPE_CHECKING:
    from router.core.plugins import PluginSet

log = structlog.get_logger("fenliu.router")


class InputError(ValueError):
    """A message or event that cannot be routed as given (unknown shop, unknown agent …)."""


class Router:
    """Routes messages and events under one live configuration."""

    def __init__(
        self,
        config: Config,
        *,
        reservations: bool = False,
        clock: Callable[[], float] | None = None,
        dedupe: Callable[[str, str], bool] | SeenIds | bool = True,
    ) -> None:
        """``dedupe``: ``True`` drops repeated ``(shop_id, msg_id)`` pairs (the last million are
        remembered, :class:`router.core.dedupe.SeenIds`); a ``SeenIds`` of the caller's does the same
        (the service's also remembers older pairs, to ask its store about); a callable decides
        instead (the Redis backend dedupes at ingest); ``False`` trusts the input (the
        simulator makes unique ids)."""
        self.config = config
        self.plugins = config.plugins
        #: No observer to call: events take :meth:`apply_plain`; and no routing hook either:
        #: messages take :meth:`route_plain`. Set with the plugin set (here and in :meth:`reload`).
        self.quiet = not config.plugins.has_observers
        self.plain = _plain(config.plugins)
        self._policies = {sid: config.policy_for(sid) for sid in config.shops}
        self.dispatcher = Dispatcher(config, reservations=reservations)
        #: the hook context of every message while the routing hooks are all built-in and
        #: nothing observes (:meth:`HookContext.rebind`): one made and freed per message was
        #: ≈ 3 % of a message's instructions with the demo's rules
        self._context = HookContext.reusable(config, self.dispatcher)
        self._clock = clock
        self.seen: SeenIds | None = dedupe if isinstance(dedupe, SeenIds) else SeenIds() if dedupe is True else None
        self._is_duplicate = self.seen.seen_before if self.seen is not None else (dedupe or None)
        self.on_decision: list[Callable[[Decision], None]] = []
        #: The ``(hook, plugin)`` calls whose results the last routed message dropped (raised,
        #: overran the time budget, returned the wrong type): the service journals them so that
        #: :meth:`replay_message` drops the same ones.
        self.dropped: list[tuple[str, str]] = []
        #: Set by the service while it replays its journal; hooks see it as ``ctx.replay``.
        self.replaying = False

    # -- clock ---------------------------------------------------------------------------------

    def _now(self, ts: float | None) -> float:
        """Wall clock when the router has one (``serve``); else the virtual clock that the
        inputs' ``ts`` drive (``route``, ``simulate``)."""
        if self._clock is not None:
            return self._clock()
        if ts is not None:
            return ts
        return self.dispatcher.now if self.dispatcher.now is not None else time.time()

    def _step(self, ts: float | None) -> tuple[float, bool]:
        """The clock value for an input stamped ``ts``, and whether timers are due by then (the
        caller then awaits :meth:`advance`); when none are, the clock just moves forward here,
        without a coroutine."""
        d = self.dispatcher
        now = ts if self._clock is None and ts is not None else self._now(ts)
        if d.now is None or (d._timers and d._timers[0][0] <= now):
            return now, True
        if now > d.now:
            d.now = now
        return now, False

    async def advance(self, now: float) -> list[Decision]:
        """Move the clock; returns what timers (expansion, shifts, reservations) decided."""
        moved = self._advance(now)
        if moved and self.plugins.has_observers:
            await self._observe(moved)
        return moved

    def _advance(self, now: float) -> list[Decision]:
        d = self.dispatcher
        if not d.due(now):
            if d.now is not None and now > d.now:
                d.now = now
            return []
        return d.advance(now)

    # -- messages ------------------------------------------------------------------------------

    async def handle_message(self, msg: Message) -> list[Decision]:
        """Route one message. Returns the decisions caused by the clock reaching ``msg.ts`` first,
        then the message's own decision (always exactly one), then any it caused for others."""
        if self.plain:
            return self.route_plain(msg)
        token = bind_message(msg)  # one coroutine for the whole message: no inner call
        try:
            shop = self.config.shops.get(msg.shop_id)
            if shop is None:
                raise InputError(_("unknown shop {shop!r}", shop=msg.shop_id))
            d = self.dispatcher
            ts = msg.ts
            if ts is None or self._clock is not None or d.now is None or (d._timers and d._timers[0][0] <= ts):
                now, due = self._step(ts)
                out = await self.advance(now) if due else []
            else:  # as in route_plain
                out = []
                if ts > d.now:
                    d.now = ts
            now = d.now  # type: ignore[assignment]
            cid = f"{msg.shop_id}:{msg.buyer_id}"  # msg.conversation_id, without the property's call
            if self._is_duplicate is not None and self._is_duplicate(msg.shop_id, msg.msg_id):
                out.append(Decision(msg.msg_id, msg.shop_id, cid, "duplicate", text=None))
                return out

            conv = d.conversations.get(cid)
            plugins = self.plugins
            if plugins.plain_routing and not plugins.has_observers:
                # built-in hooks only, which keep no context past their call: one for every message
                ctx = self._context
                ctx.rebind(shop, now, conv, msg.text, self._policies[shop.id], self.replaying)
            else:
                ctx = HookContext(self.config, shop, now, conv, d, msg.text, self._policies[shop.id], self.replaying)
            self.dropped = ctx.dropped
            if plugins.plain_routing:
                # every routing hook a built-in function: all of them in one plain call, same
                # order and isolation as the awaited loops below (router.core.inbound)
                bot = plugins.inbound(msg, ctx)
                if type(bot) is FilterVerdict:
                    out.append(self._blocked(msg, cid, conv, ctx))
                    return out
            else:
                if plugins._enrich:
                    msg = await plugins.inbound_enrich(msg, ctx)
                verdict = await plugins.inbound_filter(msg, ctx) if plugins._filter else None
                if verdict is not None and verdict.action == "block":
                    out.append(self._blocked(msg, cid, conv, ctx))
                    return out
                skill = await plugins.classify_skill(msg, ctx) if plugins._skill else None
                ctx.skill = skill or ctx.skill or ctx.policy.dispatch.default_skill
                if plugins._priority:
                    ctx.priority = await plugins.priority(msg, ctx)
                bot = await plugins.bot_reply(msg, ctx) if plugins._bot else None
            reply = bot.text if bot is not None else None
            tags = msg.buyer.tags if msg.buyer is not None else ()

            extra: list[Decision] | None = None
            new_assignment = False
            if conv is not None and conv.state != "bot":
                if ctx.priority > conv.priority:
                    d.reprioritise(conv, ctx.priority)
                if ctx.skill != conv.skill:
                    before = conv.agent_id
                    extra = d.change_skill(conv, ctx.skill)
                    new_assignment = conv.agent_id is not None and conv.agent_id != before
                action = "queued" if conv.state == "queued" else "assigned"
                agent_id = conv.agent_id
            elif bot is not None and not bot.handoff:
                if conv is None:
                    conv = d.open(msg.shop_id, msg.buyer_id, now, tags, cid)
                conv.skill = ctx.skill
                action, agent_id = "answered", None
            else:
                if conv is None:
                    conv = d.open(msg.shop_id, msg.buyer_id, now, tags, cid)
                conv.skill = ctx.skill
                conv.priority = ctx.priority
                conv.buyer_tags = tags
                state, agent_id, route_flags = d.route_new(conv)
                action = "queued" if state == "queued" else "assigned"
                new_assignment = action == "assigned"
                for f in route_flags:
                    ctx.flag(f)
            conv.messages += 1
            conv.last_ts = now
            if ctx.meta is not conv.meta:
                conv.meta.update(ctx.meta)
            decision = Decision(
                msg.msg_id, msg.shop_id, cid, action, agent_id, conv.skill,  # type: ignore[arg-type]
                conv.priority if action != "answered" else ctx.priority, reply, ctx.text, ctx.flags,
            )
            out.append(decision)
            if new_assignment and plugins.has_observers:
                await plugins.assigned(decision, ctx)
            if extra:
                out.extend(extra)
                await self._observe(extra)
            return out
        finally:
            unbind(token)

    @staticmethod
    def _blocked(msg: Message, cid: str, conv: Conversation | None, ctx: HookContext) -> Decision:
        """The decision for a message an inbound filter blocked."""
        return Decision(msg.msg_id, msg.shop_id, cid, "blocked", agent_id=conv.agent_id if conv else None,
                        skill=conv.skill if conv else None, flags=ctx.flags)

    def route_plain(self, msg: Message) -> list[Decision]:
        """:meth:`handle_message` for a router with no hook to call (:attr:`plain`): the same
        decisions, without a coroutine or a hook context. ``route`` calls it directly for every
        line. What the hooks would have set is their defaults: the conversation's skill or the
        policy's default, priority 0, no reply, the text as sent, no flags but routing's own."""
        token = bind_message(msg)
        try:
            shop = self.config.shops.get(msg.shop_id)
            if shop is None:
                raise InputError(_("unknown shop {shop!r}", shop=msg.shop_id))
            d = self.dispatcher
            ts = msg.ts
            if ts is None or self._clock is not None or d.now is None or (d._timers and d._timers[0][0] <= ts):
                now, due = self._step(ts)
                out = self._advance(now) if due else []
            else:  # _step's usual case, without its call: a stamped input and no timer due by then
                out = []
                if ts > d.now:
                    d.now = ts
            now = d.now  # type: ignore[assignment]
            cid = f"{msg.shop_id}:{msg.buyer_id}"
            if self._is_duplicate is not None and self._is_duplicate(msg.shop_id, msg.msg_id):
                out.append(Decision(msg.msg_id, msg.shop_id, cid, "duplicate", text=None))
                return out
            if self.dropped:
                self.dropped = []  # no hook here to drop a result (left alone when already empty)
            conv = d.conversations.get(cid)
            skill = conv.skill if conv is not None else None
            if not skill:
                skill = self._policies[shop.id].dispatch.default_skill
            extra: list[Decision] | None = None
            if conv is not None and conv.state != "bot":
                if conv.priority < 0:
                    d.reprioritise(conv, 0)
                if skill != conv.skill:
                    extra = d.change_skill(conv, skill)
                action = "queued" if conv.state == "queued" else "assigned"
                agent_id = conv.agent_id
                flags: list[str] = []
            else:
                tags = msg.buyer.tags if msg.buyer is not None else ()
                if conv is None:
                    conv = d.open(msg.shop_id, msg.buyer_id, now, tags, cid)
                conv.skill = skill
                conv.priority = 0
                conv.buyer_tags = tags
                state, agent_id, flags = d.route_new(conv)  # a new list each time, at most one flag
                action = "queued" if state == "queued" else "assigned"
            conv.messages += 1
            conv.last_ts = now
            out.append(Decision(msg.msg_id, msg.shop_id, cid, action, agent_id, conv.skill,  # type: ignore[arg-type]
                                conv.priority, None, msg.text, flags))
            if extra:
                out.extend(extra)
            return out
        finally:
            unbind(token)

    async def replay_message(self, msg: Message, dropped: list[tuple[str, str]]) -> list[Decision]:
        """Route a journaled message again without the hook calls whose results the live run
        dropped: a result the live run lost to an overrun or a failure must not be applied when
        the state is rebuilt, or the rebuilt queues and assignments would differ from what agents
        were told."""
        with self.plugins.skipping(dropped):
            return await self.handle_message(msg)

    # -- events ----------------------------------------------------------------------------------

    async def handle_event(self, event: Event) -> list[Decision]:
        """Apply an event; returns the decisions for every conversation it moved."""
        if self.quiet:
            return self.apply_plain(event)
        d = self.dispatcher
        now, due = self._step(event.ts)
        out = await self.advance(now) if due else []
        if isinstance(event, CloseEvent) and self.plugins.has_observers:
            conv = d.conversations.get(event.conversation_id)
            moved = self._apply(event)
            if conv is not None:
                shop = self.config.shops[conv.shop_id]
                await self.plugins.closed(conv, HookContext(self.config, shop, now, conv, d, replay=self.replaying))
        else:
            moved = self._apply(event)
        if moved:
            if self.plugins.has_observers:
                await self._observe(moved)
            out.extend(moved)
        return out

    def apply_plain(self, event: Event) -> list[Decision]:
        """:meth:`handle_event` for a router with no observer to call (:attr:`quiet`: events
        call no other hook), without a coroutine."""
        d = self.dispatcher
        ts = event.ts
        if ts is None or self._clock is not None or d.now is None or (d._timers and d._timers[0][0] <= ts):
            now, due = self._step(ts)
            out = self._advance(now) if due else []
        else:  # as in route_plain
            out = []
            if ts > d.now:
                d.now = ts
        moved = self._apply(event)
        if moved:
            out.extend(moved)
        return out

    def _apply(self, event: Event) -> list[Decision]:
        """The dispatcher's part of an event: the decisions for the conversations it moved."""
        d = self.dispatcher
        try:
            # most frequent first (route's and the simulator's close, the workbench's accept)
            if isinstance(event, CloseEvent):
                return d.close(event.conversation_id)
            if isinstance(event, AcceptEvent):
                d.accept(event.conversation_id, event.agent_id)
                return []
            if isinstance(event, TransferEvent):
                return d.transfer(event.conversation_id, to_agent=event.to_agent, to_skill=event.to_skill)
            if isinstance(event, AgentStatusEvent):
                return d.set_status(event.agent_id, event.status)
            if isinstance(event, TickEvent | RatingEvent):
                return []
            raise InputError(f"unsupported event {type(event).__name__}")
        except DispatchError as exc:
            raise InputError(*exc.args) from None  # the message (router.core.i18n.Text) kept, to translate where shown

    async def _observe(self, decisions: list[Decision]) -> None:
        if not self.plugins.has_observers:
            return
        for dec in decisions:
            if dec.action == "assigned":
                conv = self.dispatcher.conversations.get(dec.conversation_id)
                shop = self.config.shops[dec.shop_id]
                await self.plugins.assigned(dec, HookContext(self.config, shop, self.dispatcher.now or 0.0, conv,
                                                             self.dispatcher, replay=self.replaying))

    # -- outbound ----------------------------------------------------------------------------------

    async def check_reply(self, shop_id: str, text: str, conversation_id: str | None = None,
                          agent_id: str | None = None) -> OutboundResult:
        """Run an agent's reply through the outbound filters: refused with the forbidden words, or
        the text to send (masked where a filter masks)."""
        shop = self.config.shops.get(shop_id)
        if shop is None:
            raise InputError(_("unknown shop {shop!r}", shop=shop_id))
        conv = self.dispatcher.conversations.get(conversation_id or "")
        ctx = HookContext(self.config, shop, self._now(None), conv, self.dispatcher, text)
        reply = Reply(shop_id, conversation_id or "", text, agent_id)
        verdicts = await self.plugins.outbound_filter(reply, ctx)
        hits = tuple(h for v in verdicts for h in v.hits)
        flags = tuple(dict.fromkeys(f for v in verdicts for f in v.flags))
        for v in verdicts:
            if v.action == "block":
                return OutboundResult(False, text, hits, flags, v.reason)
        out = text
        for v in verdicts:
            if v.action == "mask" and v.text is not None:
                out = v.text
        return OutboundResult(True, out, hits, flags)

    # -- reload ------------------------------------------------------------------------------------

    def reload(self, config: Config) -> list[Decision]:
        """Swap in a validated configuration between two messages. Conversations keep their
        agents; new routing uses the new policies."""
        self.config = config
        self.plugins = config.plugins
        self.quiet = not config.plugins.has_observers
        self.plain = _plain(config.plugins)
        self._policies = {sid: config.policy_for(sid) for sid in config.shops}
        self._context = HookContext.reusable(config, self.dispatcher)
        return self.dispatcher.update_config(config)


def _plain(plugins: PluginSet) -> bool:
    """Whether ``plugins`` has no routing hook and no observer: then a message's decision is
    the dispatcher's alone, and :meth:`Router.route_plain` makes it without a hook context."""
    return not (plugins._enrich or plugins._filter or plugins._skill or plugins._priority or plugins._bot
                or plugins.has_observers)


def decode_message(data: bytes | str) -> Message:
    return msgspec.json.decode(data, type=Message)


__all__ = ["InputError", "Router", "decode_message"]
