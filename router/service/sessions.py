"""Agents' sessions: who is connected, the reconnect grace, and what committed decisions tell them.

Why it is shaped this way:

- **Remembered beside the router.** The router knows conversations and agents; what an agent is
  shown besides (the recent history, the buyer and order, since when a buyer waits, who was last
  told a conversation is theirs) is :class:`Memory`'s, snapshotted with the dispatcher.
- **One desk, two backends.** Attaching, the grace before an agent who dropped goes offline, and
  turning decisions into frames are the same everywhere; what "online" means and where a frame
  goes differ. A :class:`Presence` says the first (this process, or Redis shared by instances), an
  outlet the second (the session itself, or the commit that writes the agent's stream).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Protocol

import msgspec
import structlog

from router.core.models import (
    AgentStatusEvent,
    Buyer,
    Decision,
    Message,
    Order,
    WsAssigned,
    WsClosed,
    WsContext,
    WsHistoryItem,
    WsMessage,
    WsTransferred,
)
from router.core.pipeline import InputError

if TYPE_CHECKING:
    from router.service.service import Service

log = structlog.get_logger("fenliu.service")

HISTORY = 50


class Session(Protocol):
    """Where an agent's frames go: a WebSocket, or a simulated agent in-process."""

    agent_id: str

    def deliver(self, frame: msgspec.Struct) -> None: ...


class Presence(Protocol):
    """What being connected means for a backend (this process, or every instance of a Redis)."""

    log: structlog.typing.FilteringBoundLogger

    async def attaching(self, agent_id: str) -> None: ...

    async def attached(self, agent_id: str) -> None: ...

    def detached(self, agent_id: str) -> None: ...

    def grace_over(self, agent_id: str) -> None: ...

    async def hello(self, agent_id: str) -> tuple[str, list[WsAssigned]]: ...


class Outlet(Protocol):
    """Where frames go instead of the sessions (the Redis backend: its commit)."""

    def send(self, agent_id: str, frame: msgspec.Struct) -> None: ...

    def decided(self, decisions: list[Decision]) -> None: ...


class Memory:
    """What agents are shown of each open conversation beyond the router's state."""

    def __init__(self) -> None:
        #: The agent last told a conversation is theirs (told again when it moves).
        self.owner: dict[str, str] = {}
        self.history: dict[str, deque[WsHistoryItem]] = {}
        self.context: dict[str, tuple[Buyer | None, Order | None]] = {}
        self.waiting_since: dict[str, float] = {}

    def remember_message(self, msg: Message, own: Decision | None, clock: float, cid: str | None = None) -> None:
        """What agents are shown of a routed message (``cid``: its conversation, when the caller
        has it)."""
        if own is not None and own.action == "blocked":
            return
        if cid is None:
            cid = msg.conversation_id
        text = own.text if own is not None and own.text is not None else msg.text
        hist = self.history_of(cid)
        hist.append(WsHistoryItem("buyer", text, msg.ts or clock, msg.msg_id, None, msg.kind))
        if own is not None and own.reply:
            hist.append(WsHistoryItem("bot", own.reply, clock))
        context = self.context
        prev = context.get(cid)
        if prev is None:
            context[cid] = (msg.buyer, msg.order)
        else:
            context[cid] = (msg.buyer or prev[0], msg.order or prev[1])
        if own is not None and (own.action == "assigned" or own.action == "queued"):
            self.waiting_since.setdefault(cid, clock)

    def history_of(self, cid: str) -> deque[WsHistoryItem]:
        """The conversation's history, made the first time (``setdefault`` would build and drop
        a deque on every call)."""
        hist = self.history.get(cid)
        if hist is None:
            hist = self.history[cid] = deque(maxlen=HISTORY)
        return hist

    def add(self, cid: str, item: WsHistoryItem) -> None:
        self.history_of(cid).append(item)

    def forget(self, cid: str) -> None:
        self.history.pop(cid, None)
        self.context.pop(cid, None)
        self.waiting_since.pop(cid, None)

    def clear(self) -> None:
        self.owner.clear()
        self.history.clear()
        self.context.clear()
        self.waiting_since.clear()


class Sessions:
    """The connected agents' sessions, their reconnect grace, and telling them decisions."""

    def __init__(self, service: Service, presence: Presence, outlet: Outlet | None = None) -> None:
        self.service = service
        self.presence = presence
        self.outlet = outlet
        self.sessions: dict[str, Session] = {}
        self.grace: dict[str, asyncio.TimerHandle] = {}
        #: A concrete logger for the per-decision lines: the module's lazy proxy rebuilds its
        #: bound logger on every call (logging is configured before the service is made).
        self._log = log.bind()

    async def attach(self, session: Session) -> Session | None:
        """An agent connected: cancel its grace timer, bring it online if it was offline.
        Returns the session it replaces, if any."""
        aid = session.agent_id
        handle = self.grace.pop(aid, None)
        if handle is not None:
            handle.cancel()
        await self.presence.attaching(aid)
        old = self.sessions.get(aid)
        self.sessions[aid] = session
        self.service.metrics.ws_agents.set(len(self.sessions))
        await self.presence.attached(aid)
        self.presence.log.info("agent_connected", agent_id=aid)
        return old

    def detach(self, session: Session) -> None:
        aid = session.agent_id
        if self.sessions.get(aid) is not session:
            return
        del self.sessions[aid]
        self.presence.detached(aid)
        self.service.metrics.ws_agents.set(len(self.sessions))
        if not self.service.stopping:
            self.start_grace(aid)
        self.presence.log.info("agent_disconnected", agent_id=aid,
                               grace_s=self.service.config.main.server.reconnect_grace_s)

    def start_grace(self, agent_id: str) -> None:
        old = self.grace.pop(agent_id, None)
        if old is not None:
            old.cancel()
        grace = self.service.config.main.server.reconnect_grace_s
        self.grace[agent_id] = asyncio.get_running_loop().call_later(grace, self._grace_over, agent_id)

    def _grace_over(self, agent_id: str) -> None:
        self.grace.pop(agent_id, None)
        if agent_id in self.sessions or self.service.stopping:
            return
        self.presence.grace_over(agent_id)

    def stop(self) -> None:
        for handle in self.grace.values():
            handle.cancel()

    def absent(self) -> list[str]:
        """Agents not offline with neither a session nor a grace timer (after a reload)."""
        return [aid for aid, st in self.service.router.dispatcher.agents.items()
                if st.status != "offline" and aid not in self.sessions and aid not in self.grace]

    def send(self, agent_id: str, frame: msgspec.Struct) -> None:
        if self.outlet is not None:
            self.outlet.send(agent_id, frame)
            return
        session = self.sessions.get(agent_id)
        if session is not None:
            session.deliver(frame)

    def snapshot(self, cid: str, cause: str = "message") -> WsAssigned | None:
        conv = self.service.router.dispatcher.conversations.get(cid)
        if conv is None:
            return None
        memory = self.service.memory
        buyer, order = memory.context.get(cid, (None, None))
        return WsAssigned(cid, conv.shop_id, conv.buyer_id, conv.state, conv.skill, conv.priority, cause,
                          conv.reserved_until, buyer, order, list(memory.history.get(cid, ())))

    def conversations_of(self, agent_id: str) -> list[str]:
        st = self.service.router.dispatcher.agents.get(agent_id)
        return list(st.conversations) if st is not None else []

    def push(self, decisions: list[Decision], messages: dict[str, Message] | None = None) -> None:
        """Tell agents what committed decisions mean for them, and count them."""
        if self.outlet is not None:
            self.outlet.decided(decisions)
        s = self.service
        metrics, owner = s.metrics, s.memory.owner
        for d in decisions:
            metrics.count(metrics.decisions, d.action, d.cause)
            cid = d.conversation_id
            prev = owner.get(cid)
            if d.action == "assigned" and d.agent_id:
                if prev != d.agent_id:
                    if prev is not None:
                        self.send(prev, WsTransferred(cid, d.cause, d.agent_id))
                    owner[cid] = d.agent_id
                    snap = self.snapshot(cid, d.cause)
                    if snap is not None:
                        self.send(d.agent_id, snap)
                    self._log.info("assigned", shop_id=d.shop_id, conversation_id=cid, agent_id=d.agent_id, cause=d.cause)
                elif d.msg_id is not None:
                    msg = (messages or {}).get(d.msg_id)
                    ts = (msg.ts if msg is not None else None) or s.clock
                    kind = msg.kind if msg is not None else "text"
                    self.send(d.agent_id, WsMessage(cid, d.msg_id, d.text or "", ts, kind, list(d.flags)))
            elif d.action == "queued" and prev is not None:
                self.send(prev, WsTransferred(cid, d.cause))
                owner.pop(cid, None)
        for cb in s.on_committed:
            cb(decisions)

    def closed(self, cid: str, closing: str | None) -> None:
        """A close committed: the agent that held it is told, and it is forgotten."""
        if closing is not None:
            self.send(closing, WsClosed(cid))
        self.service.memory.owner.pop(cid, None)
        self.service.memory.forget(cid)

    def tell_context(self, pushes: list[tuple[str, Order]]) -> None:
        """Order news committed: the conversation's context changes and its agent is told."""
        memory = self.service.memory
        for cid, order in pushes:
            buyer, _ = memory.context.get(cid, (None, None))
            if cid in self.service.router.dispatcher.conversations:
                memory.context[cid] = (buyer, order)
            agent = memory.owner.get(cid)
            if agent is not None:
                self.send(agent, WsContext(cid, order))


class LocalPresence:
    """One instance: an agent is online while this process holds its session (or its grace)."""

    log = log

    def __init__(self, service: Service) -> None:
        self.service = service

    async def attaching(self, agent_id: str) -> None:
        return None

    async def attached(self, agent_id: str) -> None:
        st = self.service.router.dispatcher.agents.get(agent_id)
        if st is not None and st.status == "offline":
            with contextlib.suppress(InputError):
                await self.service.event(AgentStatusEvent(agent_id, "online"))

    def detached(self, agent_id: str) -> None:
        return None

    def grace_over(self, agent_id: str) -> None:
        st = self.service.router.dispatcher.agents.get(agent_id)
        if st is not None and st.status != "offline":
            log.info("agent_grace_over", agent_id=agent_id)
            self.service.engine.offline(agent_id)

    async def hello(self, agent_id: str) -> tuple[str, list[WsAssigned]]:
        """What a newly connected agent is told: its status and the conversations it holds."""
        desk = self.service.desk
        st = self.service.router.dispatcher.agents.get(agent_id)
        snaps = [s for cid in desk.conversations_of(agent_id) if (s := desk.snapshot(cid)) is not None]
        return (st.status if st else "offline"), snaps
