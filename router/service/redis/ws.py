"""The agent WebSocket when several instances share a Redis: the same protocol as
:mod:`router.service.ws`, but the conversation may be routed by another instance, so ownership is checked
by the conversation's owner (requests travel through its shard stream) instead of locally."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from router.core.models import (
    AcceptEvent,
    AgentStatusEvent,
    CloseEvent,
    TransferEvent,
    WsAccept,
    WsClose,
    WsNote,
    WsReply,
    WsResult,
    WsStatus,
    WsTransfer,
)
from router.core.i18n import _, t
from router.core.pipeline import InputError
from router.service.errors import NotYours
from router.service import ws as ws_module
from router.service.ws import WsSession, decode_frame

if TYPE_CHECKING:
    from router.service.access import Scope
    from router.service.redis.service import RedisService

log = structlog.get_logger("fenliu.redis.ws")


async def agent_socket(request: web.Request, service: RedisService, scope: Scope) -> web.WebSocketResponse:
    return await ws_module.agent_socket(request, service, scope,  # type: ignore[arg-type]
                                        handle=_handle, instance=service.id)


async def _handle(service: RedisService, session: WsSession, data: bytes) -> WsResult:
    aid = session.agent_id
    frame = decode_frame(data)
    if isinstance(frame, WsResult):
        return frame
    op = type(frame).__struct_config__.tag  # type: ignore[attr-defined]
    ref = frame.ref
    cid = getattr(frame, "conversation_id", None)
    try:
        if cid is not None and not session.scope.sees_conversation(cid):
            return WsResult(op, False, ref, cid, reason=t(_("forbidden: that shop is not permitted to your account")))
        if isinstance(frame, WsTransfer) and frame.to_agent is not None and frame.to_agent not in session.scope.visible_agents():
            return WsResult(op, False, ref, cid, reason=t(_("unknown agent {agent!r}", agent=frame.to_agent)))
        scope = session.scope  # the owner checks the asker as a local request is checked
        match frame:
            case WsAccept():
                await service.event(AcceptEvent(frame.conversation_id, aid), requester=scope)
            case WsReply():
                result = await service.reply(aid, frame.conversation_id, frame.text)
                if not result.ok:
                    return WsResult(op, False, ref, cid, reason=t(result.reason or _("blocked by the outbound filter")),
                                    text=frame.text, hits=result.hits)
                return WsResult(op, True, ref, cid, text=result.text, hits=result.hits)
            case WsTransfer():
                await service.event(TransferEvent(frame.conversation_id, frame.to_agent, frame.to_skill), requester=scope)
            case WsClose():
                await service.event(CloseEvent(frame.conversation_id), requester=scope)
            case WsStatus():
                await service.event(AgentStatusEvent(aid, frame.status))
            case WsNote():
                await service.add_note(aid, frame.conversation_id, frame.text, frame.tags)
    except (InputError, NotYours) as exc:
        return WsResult(op, False, ref, cid, reason=t(exc))
    return WsResult(op, True, ref, cid)
