"""The agents' and supervisors' API over the routing state: open conversations, agents and
their status, buyers' profiles, and the agents' WebSocket. Each handler goes through
:func:`router.service.access.gate` and shows only what the account's
:class:`~router.service.access.Scope` permits.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from router.core.i18n import _, t
from router.core.ingest import explain
from router.core.models import AgentStatusEvent
from router.core.pipeline import InputError
from router.service.access import Scope, agent_shops, gate
from router.service.api_types import ProfileRequest, StatusRequest
from router.service.http import SERVICE, error, json_response
from router.service.service import Service
from router.service.ws import agent_socket


def _conv_json(service: Service, conv: Any) -> dict[str, Any]:
    return {"id": conv.id, "shop_id": conv.shop_id, "buyer_id": conv.buyer_id, "state": conv.state,
            "agent_id": conv.agent_id, "skill": conv.skill, "priority": conv.priority,
            "opened_at": conv.opened_at, "queued_at": conv.queued_at, "reserved_until": conv.reserved_until,
            "messages": conv.messages, "last_ts": conv.last_ts}


@gate()
async def conversations(request: web.Request, scope: Scope) -> web.Response:
    service = request.app[SERVICE]
    shop = request.query.get("shop_id")
    if shop is not None:
        scope.require_shop(shop)
    state = request.query.get("state")
    agent = request.query.get("agent_id")
    out = []
    for conv in await service.open_conversations():
        if not scope.sees(conv.shop_id) or (shop and conv.shop_id != shop):
            continue
        if (state and conv.state != state) or (agent and conv.agent_id != agent):
            continue
        out.append(_conv_json(service, conv))
    out.sort(key=lambda c: (c["shop_id"], c["opened_at"]))
    return json_response({"conversations": out})


@gate()
async def conversation(request: web.Request, scope: Scope) -> web.Response:
    service = request.app[SERVICE]
    cid = request.match_info["cid"]
    scope.require_conversation(cid)
    view = await service.conversation_view(cid)
    if view is None or not scope.sees(view.conversation.shop_id):
        return error(404, _("no open conversation {cid!r}", cid=cid))
    return json_response({**_conv_json(service, view.conversation), "history": view.history, "notes": view.notes,
                          "buyer": view.buyer, "order": view.order})


@gate()
async def agents(request: web.Request, scope: Scope) -> web.Response:
    """Agents serving the scope's shops; another shop's conversations appear only as a count
    (``other_conversations``): their ids contain buyer ids."""
    service = request.app[SERVICE]
    d = service.router.dispatcher
    out = []
    for aid in scope.visible_agents():
        cfg = service.config.agents[aid]
        st = d.agents.get(aid)
        mine, others = scope.agent_view(st.conversations if st else ())
        out.append({"id": aid, "name": cfg.name, "skills": list(cfg.skills),
                    "shops": [s for s in agent_shops(service.config, aid) if scope.sees(s)],
                    "status": st.status if st else "offline", "in_shift": st.in_shift if st else False,
                    "load": st.load if st else 0, "max_concurrent": cfg.max_concurrent,
                    "connected": aid in service.sessions, "conversations": mine, "other_conversations": others})
    if hasattr(service, "shared_agents"):
        shared = await service.shared_agents([a["id"] for a in out])
        for a in out:
            extra = dict(shared.get(a["id"], {}))
            if "conversations" in extra:
                extra["conversations"], others = scope.agent_view(extra["conversations"])
                extra["other_conversations"] = others
            a.update(extra)
    return json_response({"agents": out})


@gate()
async def agent_status(request: web.Request, scope: Scope) -> web.Response:
    """An agent sets its own status; a supervisor sets an agent's only when every shop the agent
    serves is theirs (going offline moves the agent's conversations, of every shop)."""
    service = request.app[SERVICE]
    aid = request.match_info["agent_id"]
    if aid not in service.config.agents:
        return error(404, _("unknown agent {agent!r}", agent=aid), "unknown_agent")
    if not scope.may_manage_agent(aid):
        return error(403, _("forbidden: account {account!r} may not set the status of agent {agent!r} "
                            "(it serves shops outside the account's)", account=scope.account.name, agent=aid),
                     "agent_forbidden")
    try:
        req = msgspec.json.decode(await request.read(), type=StatusRequest)
        event = AgentStatusEvent(aid, req.status)  # type: ignore[arg-type]
        event = msgspec.convert(msgspec.to_builtins(event), AgentStatusEvent)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return error(400, _("{reason} (expected {shape})", reason=explain(exc),
                            shape='{"status": "online" | "break" | "offline"}'))
    try:
        moved = await service.event(event)
    except InputError as exc:
        return error(409, t(exc))
    return json_response({"agent_id": aid, "status": event.status, "moved": [d for d in moved if scope.sees(d.shop_id)]})


@gate()
async def get_profile(request: web.Request, scope: Scope) -> web.Response:
    service = request.app[SERVICE]
    shop_id, buyer_id = request.match_info["shop_id"], request.match_info["buyer_id"]
    scope.require_shop(shop_id)
    p = service.profiles.get((shop_id, buyer_id))
    order = service.orders.get((shop_id, buyer_id))
    orders = await service.records.buyer_orders(shop_id, buyer_id)
    return json_response({"shop_id": shop_id, "buyer_id": buyer_id, "tags": p.tags if p else [],
                          "notes": p.notes if p else [], "order": order, "orders": orders})


@gate()
async def put_profile(request: web.Request, scope: Scope) -> web.Response:
    service = request.app[SERVICE]
    shop_id, buyer_id = request.match_info["shop_id"], request.match_info["buyer_id"]
    scope.require_shop(shop_id)
    account = scope.account
    try:
        req = msgspec.json.decode(await request.read(), type=ProfileRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return error(400, explain(exc))
    if req.tags is not None and account.role == "agent":
        return error(403, _("forbidden: agents may add tags (add_tags) but only supervisors replace them"))
    p = await service.set_profile(shop_id, buyer_id, tags=req.tags, add_tags=tuple(req.add_tags), note=req.note,
                                  author=account.name)
    return json_response({"shop_id": shop_id, "buyer_id": buyer_id, "tags": p.tags, "notes": p.notes})


@gate(ws=True)
async def agent_ws(request: web.Request, scope: Scope) -> web.StreamResponse:
    service = request.app[SERVICE]
    if scope.agent_id is None:
        return error(403, _("account {account!r} is not an agent (set agent_id, or account in agents.toml)",
                            account=scope.account.name),
                     "not_an_agent")
    return await agent_socket(request, service, scope)
