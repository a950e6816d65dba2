"""The agent WebSocket (``GET /v1/agents/ws``): one connection per agent.

Frames are JSON objects with a ``type`` (structs ``Ws*`` in :mod:`router.models`). Outgoing
frames go through a bounded per-connection queue written by one task, so a slow client never
blocks the router: if it falls too far behind it is disconnected, and the reconnect grace keeps
its conversations while it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from aiohttp import WSMsgType, web

from router.ingest import explain
from router.models import (
    AcceptEvent,
    AgentStatusEvent,
    CloseEvent,
    TransferEvent,
    WsAccept,
    WsClientFrame,
    WsClose,
    WsHello,
    WsNote,
    WsReply,
    WsResult,
    WsStatus,
    WsTransfer,
)
from router.pipeline import InputError
from router.service import NotYours, Overloaded

if TYPE_CHECKING:
    from router.accounts import Account
    from router.service import Service


log = structlog.get_logger("fenliu.ws")

_decode = msgspec.json.Decoder(WsClientFrame)
_encode = msgspec.json.Encoder().encode
SEND_QUEUE = 2000


class WsSession:
    """One connected agent; :meth:`deliver` never blocks."""

    def __init__(self, ws: web.WebSocketResponse, agent_id: str, account: Account) -> None:
        self.ws = ws
        self.agent_id = agent_id
        self.account = account
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(SEND_QUEUE)
        self.task: asyncio.Task | None = None

    def deliver(self, frame: msgspec.Struct) -> None:
        try:
            self.queue.put_nowait(_encode(frame))
        except asyncio.QueueFull:
            log.warning("agent_too_slow", agent_id=self.agent_id)
            asyncio.get_running_loop().create_task(self.ws.close(code=4008, message=b"too slow"))

    async def writer(self) -> None:
        while True:
            data = await self.queue.get()
            if data is None or self.ws.closed:
                return
            try:
                await self.ws.send_str(data.decode())
            except (ConnectionError, RuntimeError):
                return

    async def close(self, code: int, message: bytes) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=message)


from router.server import SOCKETS  # noqa: E402 - server imports this module lazily


async def agent_socket(request: web.Request, service: Service, account: Account, agent_id: str,
                       handle: Callable[[Any, WsSession, bytes], Awaitable[WsResult]] | None = None,
                       **log_context: Any) -> web.WebSocketResponse:
    """One agent's WebSocket: hello, then one result frame per command (``handle``: this
    module's, or the Redis backend's, which forwards commands to the instance routing them)."""
    handle = handle or _handle
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 * 1024)
    await ws.prepare(request)
    session = WsSession(ws, agent_id, account)
    bound = log.bind(agent_id=agent_id, account=account.name, **log_context)
    session.task = asyncio.create_task(session.writer())
    old = await service.attach(session)
    if old is not None and old is not session:
        await old.close(4000, b"replaced by a new connection")  # type: ignore[attr-defined]
    status, snaps = await service.hello(agent_id)
    session.deliver(WsHello(agent_id, status, snaps))
    request.app[SOCKETS].add(ws)
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                data = msg.data.encode() if msg.type == WSMsgType.TEXT else msg.data
                session.deliver(await handle(service, session, data))
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        request.app[SOCKETS].discard(ws)
        service.detach(session)
        session.queue.put_nowait(None) if not session.queue.full() else None
        if session.task is not None:
            session.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session.task
        bound.info("ws_closed")
    return ws


def _holds(service: Service, agent_id: str, cid: str) -> str | None:
    conv = service.router.dispatcher.conversations.get(cid)
    if conv is None:
        return f"no open conversation {cid!r}"
    if conv.agent_id != agent_id:
        return f"conversation {cid!r} is not yours"
    return None


async def _handle(service: Service, session: WsSession, data: bytes) -> WsResult:
    aid = session.agent_id
    try:
        frame = _decode.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        ref = None
        with contextlib.suppress(msgspec.DecodeError):
            raw = msgspec.json.decode(data)
            ref = raw.get("ref") if isinstance(raw, dict) and isinstance(raw.get("ref"), str) else None
        return WsResult("invalid", False, ref, reason=_frame_reason(exc))
    op = type(frame).__struct_config__.tag  # type: ignore[attr-defined]
    ref = frame.ref
    cid = getattr(frame, "conversation_id", None)
    log_ = log.bind(agent_id=aid, conversation_id=cid, op=op)
    try:
        if cid is not None and not session.account.may_see_shop(cid.split(":", 1)[0]):
            return WsResult(op, False, ref, cid, reason="forbidden: that shop is not permitted to your account")
        match frame:
            case WsAccept():
                await service.event(AcceptEvent(frame.conversation_id, aid))
            case WsReply():
                result = await service.reply(aid, frame.conversation_id, frame.text)
                if not result.ok:
                    words = "、".join(dict.fromkeys(h.word for h in result.hits))
                    reason = result.reason or "blocked by the outbound filter"
                    if words and words not in reason:
                        reason = f"{reason} (forbidden: {words})"
                    log_.info("reply_refused", words=[h.word for h in result.hits])
                    return WsResult(op, False, ref, cid, reason=reason, text=frame.text, hits=result.hits)
                return WsResult(op, True, ref, cid, text=result.text, hits=result.hits)
            case WsTransfer():
                if (why := _holds(service, aid, frame.conversation_id)) is not None:
                    return WsResult(op, False, ref, cid, reason=why)
                await service.event(TransferEvent(frame.conversation_id, frame.to_agent, frame.to_skill))
            case WsClose():
                if (why := _holds(service, aid, frame.conversation_id)) is not None:
                    return WsResult(op, False, ref, cid, reason=why)
                await service.event(CloseEvent(frame.conversation_id))
            case WsStatus():
                await service.event(AgentStatusEvent(aid, frame.status))
            case WsNote():
                if (why := _holds(service, aid, frame.conversation_id)) is not None:
                    return WsResult(op, False, ref, cid, reason=why)
                await service.add_note(aid, frame.conversation_id, frame.text, frame.tags)
    except (InputError, NotYours, Overloaded) as exc:
        return WsResult(op, False, ref, cid, reason=str(exc))
    log_.debug("ws_ok")
    return WsResult(op, True, ref, cid)


def _frame_reason(exc: Exception) -> str:
    text = explain(exc)
    if "Invalid value" in str(exc) and "type" in str(exc):
        return "unknown frame type (expected accept, reply, transfer, close, status or note)"
    return text
