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
    Decision,
    Event,
    Message,
    OutboundResult,
    RatingEvent,
    Reply,
    TickEvent,
    TransferEvent,
)

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
        self._policies = {sid: config.policy_for(sid) for sid in config.shops}
        self.dispatcher = Dispatcher(config, reservations=reservations)
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
        d = self.dispatcher
        if not d.due(now):
            if d.now is not None and now > d.now:
                d.now = now
            return []
        moved = d.advance(now)
        if moved and self.plugins.has_observers:
            await self._observe(moved)
        return moved

    # -- messages ------------------------------------------------------------------------------

    async def handle_message(self, msg: Message) -> list[Decision]:
        """Route one message. Returns the decisions caused by the clock reaching ``msg.ts`` first,
        then the message's own decision (always exactly one), then any it caused for others."""
        token = bind_message(msg)  # one coroutine for the whole message: no inner call
        try:
            shop = self.config.shops.get(msg.shop_id)
            if shop is None:
                raise InputError(_("unknown shop {shop!r}", shop=msg.shop_id))
            d = self.dispatcher
            now, due = self._step(msg.ts)
            out = await self.advance(now) if due else []
            now = d.now  # type: ignore[assignment]
            cid = f"{msg.shop_id}:{msg.buyer_id}"  # msg.conversation_id, without the property's call
            if self._is_duplicate is not None and self._is_duplicate(msg.shop_id, msg.msg_id):
                out.append(Decision(msg.msg_id, msg.shop_id, cid, "duplicate", text=None))
                return out

            conv = d.conversations.get(cid)
            ctx = HookContext(self.config, shop, now, conv, d, msg.text, self._policies[shop.id], self.replaying)
            self.dropped = ctx.dropped
            plugins = self.plugins
            if plugins._enrich:
                msg = await plugins.inbound_enrich(msg, ctx)
            verdict = await plugins.inbound_filter(msg, ctx) if plugins._filter else None
            if verdict is not None and verdict.action == "block":
                out.append(Decision(msg.msg_id, msg.shop_id, cid, "blocked",
                                    agent_id=conv.agent_id if conv else None,
                                    skill=conv.skill if conv else None, flags=ctx.flags))
                return out

            policy = ctx.policy.dispatch
            skill = await plugins.classify_skill(msg, ctx) if plugins._skill else None
            ctx.skill = skill or ctx.skill or policy.default_skill
            if plugins._priority:
                ctx.priority = await plugins.priority(msg, ctx)
            bot = await plugins.bot_reply(msg, ctx) if plugins._bot else None
            reply = bot.text if bot is not None else None
            tags = msg.buyer.tags if msg.buyer is not None else ()

            extra: list[Decision] = []
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
                    conv = d.open(msg.shop_id, msg.buyer_id, now, tags)
                conv.skill = ctx.skill
                action, agent_id = "answered", None
            else:
                if conv is None:
                    conv = d.open(msg.shop_id, msg.buyer_id, now, tags)
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
        d = self.dispatcher
        now, due = self._step(event.ts)
        out = await self.advance(now) if due else []
        try:
            # most frequent first (the simulator's and the workbench's accept and close)
            if isinstance(event, AcceptEvent):
                d.accept(event.conversation_id, event.agent_id)
                return out
            if isinstance(event, CloseEvent):
                conv = d.conversations.get(event.conversation_id)
                moved = d.close(event.conversation_id)
                if conv is not None and self.plugins.has_observers:
                    shop = self.config.shops[conv.shop_id]
                    await self.plugins.closed(conv, HookContext(self.config, shop, now, conv, d, replay=self.replaying))
            elif isinstance(event, TransferEvent):
                moved = d.transfer(event.conversation_id, to_agent=event.to_agent, to_skill=event.to_skill)
            elif isinstance(event, AgentStatusEvent):
                moved = d.set_status(event.agent_id, event.status)
            elif isinstance(event, TickEvent | RatingEvent):
                moved = []
            else:
                raise InputError(f"unsupported event {type(event).__name__}")
        except DispatchError as exc:
            raise InputError(*exc.args) from None  # the message (router.core.i18n.Text) kept, to translate where shown
        if moved:
            if self.plugins.has_observers:
                await self._observe(moved)
            out.extend(moved)
        return out

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
        self._policies = {sid: config.policy_for(sid) for sid in config.shops}
        return self.dispatcher.update_config(config)


def decode_message(data: bytes | str) -> Message:
    return msgspec.json.decode(data, type=Message)


__all__ = ["InputError", "Router", "decode_message"]
