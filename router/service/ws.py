"""The agent WebSocket (``GET /v1/agents/ws``): one connection per agent.

Frames are JSON objects with a ``type`` (structs ``Ws*`` in :mod:`router.core.models`). Outgoing
frames go through a bounded per-connection queue written by one task, so a slow client never
blocks the router: if it falls too far behind it is disconnected, and the reconnect grace keeps
its conversations while it comes back.

Every outgoing frame passes :meth:`WsSession.deliver` (or :meth:`WsSession.deliver_encoded` for
frames another instance encoded), which drops what the account's scope may not see
(:meth:`router.service.access.Scope.visible_frame`): an agent serving two clients' shops, used through
an account limited to one, never learns of the other's conversations.

Close codes: 1007 for a frame that is not JSON (or nested too deep), 1011 for a fault of ours
(logged with its traceback), 4000 replaced by a new connection, 4008 too slow, and
:data:`router.service.access.CLOSE_REVOKED` (4401) when the account's token stops being valid.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import msgspec
import structlog
from aiohttp import WSMsgType, web

from router.core import i18n
from router.core.i18n import _, t
from router.core.ingest import explain
from router.core.models import (
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
from router.core.pipeline import InputError
from router.service.access import BOOK, EXPIRES, Scope, visible_encoded
from router.service.errors import NotYours, Overloaded
from router.service.http import SOCKETS

if TYPE_CHECKING:
    from router.service.service import Service


log = structlog.get_logger("fenliu.ws")

_decode = msgspec.json.Decoder(WsClientFrame)
_encode = msgspec.json.Encoder(enc_hook=i18n.enc_hook).encode  # a Text left in a frame: translated
SEND_QUEUE = 2000


class WsSession:
    """One connected agent; :meth:`deliver` never blocks."""

    def __init__(self, ws: web.WebSocketResponse, scope: Scope) -> None:
        assert scope.agent_id is not None
        self.ws = ws
        self.scope = scope
        self.agent_id: str = scope.agent_id
        self.account = scope.account
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(SEND_QUEUE)
        self.task: asyncio.Task | None = None

    def deliver(self, frame: msgspec.Struct) -> None:
        visible = self.scope.visible_frame(frame)
        if visible is not None:
            self._put(_encode(visible))

    def answer(self, result: WsResult) -> None:
        """The result of the client's own frame: it echoes what the client sent, so it is never
        filtered (a refusal must reach the client)."""
        self._put(_encode(result))

    def deliver_encoded(self, data: bytes) -> None:
        """A frame encoded elsewhere (the Redis backend's relay), filtered the same way."""
        if visible_encoded(self.scope, data):
            self._put(data)

    def _put(self, data: bytes) -> None:
        try:
            self.queue.put_nowait(data)
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


class FrameRejected(Exception):
    """A client frame that cannot be answered: the socket is closed with ``code`` (1007 not
    JSON, 1008 nested deeper than any frame) and the reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


async def agent_socket(request: web.Request, service: Service, scope: Scope) -> web.WebSocketResponse:
    """One agent's WebSocket: hello, then one result frame per command. The same on every
    backend: on a shared Redis the service forwards a command to the instance routing it."""
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 * 1024)
    await ws.prepare(request)
    session = WsSession(ws, scope)
    agent_id = session.agent_id
    bound = log.bind(agent_id=agent_id, account=scope.account.name)
    if (instance := getattr(service, "id", None)) is not None:  # a shared backend's instance
        bound = bound.bind(instance=instance)
    session.task = asyncio.create_task(session.writer())
    book = request.app[BOOK]
    book.watch(ws, scope.account, request[EXPIRES], session.close)
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
                try:
                    session.answer(await _handle(service, session, data))
                except FrameRejected as exc:
                    bound.info("ws_frame_rejected", reason=str(exc))
                    await session.close(exc.code, str(exc).encode()[:120])
                    break
                except (ConnectionError, asyncio.CancelledError):
                    raise
                except Exception:  # noqa: BLE001 - a fault of ours: logged once, the socket closed, never an HTTP 500 in it
                    bound.exception("ws_handler_failed")
                    await session.close(1011, b"internal error (logged)")
                    break
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        book.unwatch(ws)
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
        return _("no open conversation {cid!r}", cid=cid)
    if conv.agent_id != agent_id:
        return _("conversation {cid!r} is not yours", cid=cid)
    return None


async def _handle(service: Service, session: WsSession, data: bytes) -> WsResult:
    """One command frame, answered by one result. The asker's scope goes with every event: with
    one instance it was checked here; on a shared Redis the instance routing the conversation
    checks it (and whether the agent holds the conversation) as it would a local request."""
    aid = session.agent_id
    frame = decode_frame(data)
    if isinstance(frame, WsResult):
        return frame
    op = type(frame).__struct_config__.tag  # type: ignore[attr-defined]
    ref = frame.ref
    cid = getattr(frame, "conversation_id", None)
    scope = session.scope
    local = not getattr(service, "checks_claims", False)
    log_ = log.bind(agent_id=aid, conversation_id=cid, op=op)
    try:
        if cid is not None and not scope.sees_conversation(cid):
            return WsResult(op, False, ref, cid, reason=t(_("forbidden: that shop is not permitted to your account")))
        if isinstance(frame, WsTransfer) and frame.to_agent is not None and frame.to_agent not in scope.visible_agents():
            return WsResult(op, False, ref, cid, reason=t(_("unknown agent {agent!r}", agent=frame.to_agent)))
        if local and isinstance(frame, WsTransfer | WsClose | WsNote) and (why := _holds(service, aid, frame.conversation_id)):
            return WsResult(op, False, ref, cid, reason=t(why))
        match frame:
            case WsAccept():
                await service.event(AcceptEvent(frame.conversation_id, aid), requester=scope)
            case WsReply():
                result = await service.reply(aid, frame.conversation_id, frame.text)
                if not result.ok:
                    words = "、".join(dict.fromkeys(h.word for h in result.hits))
                    reason = result.reason or _("blocked by the outbound filter")
                    if words and words not in reason:
                        reason = _("{reason} (forbidden: {words})", reason=reason, words=words)
                    log_.info("reply_refused", words=[h.word for h in result.hits])
                    return WsResult(op, False, ref, cid, reason=t(reason), text=frame.text, hits=result.hits)
                return WsResult(op, True, ref, cid, text=result.text, hits=result.hits)
            case WsTransfer():
                await service.event(TransferEvent(frame.conversation_id, frame.to_agent, frame.to_skill), requester=scope)
            case WsClose():
                await service.event(CloseEvent(frame.conversation_id), requester=scope)
            case WsStatus():
                await service.event(AgentStatusEvent(aid, frame.status))
            case WsNote():
                await service.add_note(aid, frame.conversation_id, frame.text, frame.tags)
    except (InputError, NotYours, Overloaded) as exc:
        return WsResult(op, False, ref, cid, reason=t(exc))
    log_.debug("ws_ok")
    return WsResult(op, True, ref, cid)


class _Ref(msgspec.Struct):
    ref: str | None = None


def decode_frame(data: bytes) -> WsClientFrame | WsResult:
    """A client frame, or the ``invalid`` result naming what is wrong with a well-formed one.
    Raises :class:`FrameRejected` for bytes that are not a JSON frame at all (malformed,
    not UTF-8, nested deeper than any frame can be)."""
    try:
        return _decode.decode(data)
    except msgspec.ValidationError as exc:
        try:
            msgspec.json.decode(data)  # the rare path only: is it a frame at all?
            ref = _ref.decode(data).ref
        except msgspec.MsgspecError:
            ref = None
        except RecursionError:
            raise FrameRejected(1008, "frame nested too deeply") from None
        return WsResult("invalid", False, ref, reason=_frame_reason(exc))
    except msgspec.DecodeError as exc:
        raise FrameRejected(1007, f"not a JSON frame: {explain(exc)}") from None
    except RecursionError:
        raise FrameRejected(1008, "frame nested too deeply") from None


_ref = msgspec.json.Decoder(_Ref)


def _frame_reason(exc: Exception) -> str:
    if "Invalid value" in str(exc) and "type" in str(exc):
        return t(_("unknown frame type (expected accept, reply, transfer, close, status or note)"))
    return t(explain(exc))
