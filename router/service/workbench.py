"""The browser side of ``fenliu serve``: the agents' workbench (客服工作台) and the supervisors'
dashboard as static files (``router/service/web/``, no build step), plus the endpoints and the live feed
those pages need beyond the service's own API.

- ``GET /`` → ``/web/``: the login page, then ``workbench.html`` or ``dashboard.html``.
- ``GET /v1/me``: who the token belongs to (account, role, shops with names and platforms, the
  agent it works as, the skill groups it can transfer to) and the server's clock.
- ``GET /v1/quick-replies?conversation_id=…[&q=typed][&text=buyer's message]``: the shop's
  话术库, grouped, with placeholders filled from the conversation's buyer and order
  (``{order_id}`` stays visible when unknown), and the ids whose keyword occurs in ``q``; with
  ``text``, ``assist``: the three best FAQ answers and quick replies for the buyer's message
  (智能辅助, plugins/bot.py ``suggest_replies``), and ``draft``: the answer the bot's ``suggest``
  mode left for this conversation's composer, if any.
- ``POST /v1/replies/check`` ``{"conversation_id" or "shop_id", "text"}``: the outbound filter
  run without sending: ``{"ok", "text", "reason", "hits": [{word, start, end, source}]}``.
- ``POST /v1/conversations/{cid}/transfer`` ``{"to_agent"}`` or ``{"to_skill"}``: 转接 by the
  agent holding the conversation or a supervisor of its shop.
- ``GET /v1/today``: today's figures (3-minute reply rate, average response time, replies,
  conversations received, per hour); an agent sees its own, a supervisor its shops'.
- ``GET /v1/dashboard``: queues per skill, agents, open conversations, recent decisions, today.
- ``GET /v1/supervisors/ws?ticket=…`` (a ticket from ``POST /v1/auth/ws-ticket``): supervisors'
  live feed: ``decision`` frames as decisions commit and a ``dashboard`` frame every two seconds.

Every handler goes through :func:`router.service.access.gate` and filters what it shows with the
account's :class:`~router.service.access.Scope`: the pages are a convenience, never the authority.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections import deque
from collections.abc import Container
from pathlib import Path
from typing import Any

import msgspec
import structlog
from aiohttp import WSMsgType, web

from router.service.access import BOOK, EXPIRES, Scope, agent_shops, gate, public
from router.core.i18n import _, t
from router.core.ingest import explain
from router.core.models import Decision, Message, TransferEvent
from router.core.pipeline import InputError
from router.service.api_types import CheckRequest, TransferRequest
from router.service.http import SERVICE, SOCKETS, error, json_response
from router.service.service import Service
from router.service.today import Today

log = structlog.get_logger("fenliu.workbench")

WEB_DIR = Path(__file__).resolve().parent / "web"
FEED_KEEP = 200
PUSH_EVERY_S = 2.0

_NAME = re.compile(r"^[a-z0-9_-]+\.(html|js|css|svg|png)$")
_TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
          "css": "text/css; charset=utf-8", "svg": "image/svg+xml", "png": "image/png",
          "json": "application/json; charset=utf-8"}
_CATALOGUE = re.compile(r"^[A-Za-z]{2}(-[A-Za-z]{2})?\.json$")  # router/service/web/i18n/: the pages' strings
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src * data: blob:; media-src * data: blob:; "
        "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")



# -- static files ----------------------------------------------------------------------------------


@public
async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/web/")


@public
async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name") or "index.html"
    path = WEB_DIR / name
    if "lang" in request.match_info:
        name = request.match_info["lang"]
        path = WEB_DIR / "i18n" / name
        if not _CATALOGUE.match(name):
            name = ""
    elif not _NAME.match(name):
        name = ""
    if not name or not path.is_file():
        return error(404, _("no such page {name!r}", name=name))
    return web.FileResponse(path, headers={"Content-Type": _TYPES[name.rsplit(".", 1)[1]],
                                           "Cache-Control": "no-cache", "Content-Security-Policy": _CSP,
                                           "X-Content-Type-Options": "nosniff"})


# -- who am I ----------------------------------------------------------------------------------------


@gate()
async def me(request: web.Request, scope: Scope) -> web.Response:
    service = request.app[SERVICE]
    account, aid = scope.account, scope.agent_id
    shops = [{"id": s.id, "name": s.name or s.id, "platform": s.platform}
             for s in service.config.shops.values() if scope.sees(s.id)]
    skills = sorted({sk for a in scope.visible_agents() for sk in service.config.agents[a].skills})
    agent = None
    if aid is not None:
        cfg = service.config.agents[aid]
        agent = {"id": aid, "name": cfg.name or aid, "skills": list(cfg.skills), "max_concurrent": cfg.max_concurrent,
                 "shops": [s for s in agent_shops(service.config, aid) if scope.sees(s)]}
    return json_response({"account": account.name, "role": account.role, "shops": shops, "agent_id": aid,
                          "agent": agent, "skills": skills, "server_time": time.time(),
                          "reply_window_s": service.config.main.defaults.reply_within_s})


# -- quick replies and the outbound check -----------------------------------------------------------


@gate()
async def quick_replies(request: web.Request, scope: Scope) -> web.Response:
    from plugins import bot

    service = request.app[SERVICE]
    cid = request.query.get("conversation_id")
    shop_id = request.query.get("shop_id")
    if cid:
        shop_id = scope.require_conversation(cid)
    elif shop_id:
        scope.require_shop(shop_id)
    else:
        return error(400, _("give conversation_id (or shop_id)"))
    buyer, order = service.context.get(cid or "", (None, None))
    stub = Message(shop_id, "-", (cid or ":-").split(":", 1)[1], buyer=buyer, order=order) if cid else None
    try:
        items = bot.list_quick_replies(service.config, shop_id)
        typed = request.query.get("q", "")
        suggested = [q.id for q in bot.suggest_quick_replies(service.config, shop_id, typed)] if typed else []
        rendered = {q.id: bot.render_quick_reply(service.config, shop_id, q.id, stub) for q in items}
    except (AttributeError, KeyError):
        items, suggested, rendered = [], [], {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for q in items:
        groups.setdefault(q.group, []).append({"id": q.id, "title": q.title or q.id, "keywords": list(q.keywords),
                                               "template": q.text, "text": rendered[q.id]})
    assist: list[dict[str, Any]] = []
    draft = None
    text = request.query.get("text", "")
    if text:
        try:
            assist = [msgspec.to_builtins(s) for s in bot.suggest_replies(service.config, shop_id, text, stub)]
        except (AttributeError, KeyError):
            assist = []
        conv = service.router.dispatcher.conversations.get(cid) if cid else None
        hint = conv.meta.get("bot", {}).get("suggestion") if conv is not None else None
        if isinstance(hint, dict) and hint.get("why") == "suggest":
            draft = hint.get("text")
    return json_response({"shop_id": shop_id, "conversation_id": cid,
                          "groups": [{"group": g, "items": v} for g, v in groups.items()], "suggested": suggested,
                          "assist": assist, "draft": draft})


@gate()
async def check_reply(request: web.Request, scope: Scope) -> web.Response:
    service = request.app[SERVICE]
    try:
        req = msgspec.json.decode(await request.read(), type=CheckRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return error(400, _("{reason} (expected {shape})", reason=explain(exc), shape='{"conversation_id" or "shop_id", "text"}'))
    if req.conversation_id:
        shop_id = scope.require_conversation(req.conversation_id)
    elif req.shop_id:
        shop_id = scope.require_shop(req.shop_id)
    else:
        return error(400, _("give conversation_id or shop_id"))
    try:
        result = await service.router.check_reply(shop_id, req.text, req.conversation_id, scope.agent_id)
    except InputError as exc:
        return error(404, t(exc))
    reason = result.reason
    if not result.ok:
        words = "、".join(dict.fromkeys(h.word for h in result.hits))
        reason = reason or _("blocked by the outbound filter")
        if words and words not in reason:
            reason = _("{reason} (forbidden: {words})", reason=reason, words=words)
    return json_response({"ok": result.ok, "text": result.text, "reason": reason and t(reason), "hits": result.hits,
                          "flags": result.flags})


# -- moving conversations -----------------------------------------------------------------------------


@gate()
async def transfer(request: web.Request, scope: Scope) -> web.Response:
    service = request.app[SERVICE]
    account = scope.account
    cid = request.match_info["cid"]
    shop_id = scope.require_conversation(cid)
    conv = service.router.dispatcher.conversations.get(cid)
    shared = getattr(service, "checks_claims", False)  # the Redis backend: the routing instance checks these
    if conv is None and not shared:
        return error(404, _("no open conversation {cid!r}", cid=cid))
    holder = scope.agent_id
    if not shared and not scope.is_supervisor and (holder is None or conv is None or conv.agent_id != holder):
        return error(403, _("forbidden: conversation {cid!r} is not yours, and moving others' needs a supervisor", cid=cid))
    try:
        req = msgspec.json.decode(await request.read(), type=TransferRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return error(400, explain(exc))
    if (req.to_agent is None) == (req.to_skill is None):
        return error(400, _('give exactly one of "to_agent" or "to_skill"'))
    if req.to_agent is not None and req.to_agent not in scope.visible_agents():
        return error(404, _("unknown agent {agent!r}", agent=req.to_agent), "unknown_agent")
    target = service.router.dispatcher.agents.get(req.to_agent) if req.to_agent is not None else None
    if target is not None and not target.in_shift:
        return error(409, _("agent {agent!r} is off shift", agent=req.to_agent), "agent_off_shift")
    try:
        event = TransferEvent(cid, req.to_agent, req.to_skill)
        moved = await (service.event(event, requester=scope, via="http") if shared  # type: ignore[call-arg]
                       else service.event(event))
    except InputError as exc:
        return error(getattr(exc, "status", 409), t(exc), getattr(exc, "code", None))
    log.info("transferred", by=account.name, shop_id=shop_id, conversation_id=cid, to_agent=req.to_agent,
             to_skill=req.to_skill)
    return json_response({"conversation_id": cid, "moved": moved})


# -- today's figures ------------------------------------------------------------------------------------


TODAY = web.AppKey("today", Today)


@gate()
async def today(request: web.Request, scope: Scope) -> web.Response:
    service = request.app[SERVICE]
    account = scope.account
    figures: Today = request.app[TODAY]
    await figures.ready()
    shops = scope.shops
    if scope.is_supervisor:
        return json_response(figures.figures(shops))
    aid = scope.agent_id
    if aid is None:
        return error(403, _("account {account!r} is neither an agent nor a supervisor", account=account.name))
    st = service.router.dispatcher.agents.get(aid)
    return json_response({"agent_id": aid, "status": st.status if st else "offline",
                          "in_shift": st.in_shift if st else False, **figures.figures(shops, agent_id=aid)})


# -- the supervisors' dashboard and live feed ---------------------------------------------------------


class Feed:
    """Committed decisions for the dashboard: the last few for a new page, live to sockets."""

    def __init__(self) -> None:
        self.recent: deque[tuple[Decision, float]] = deque(maxlen=FEED_KEEP)
        self.sockets: dict[web.WebSocketResponse, tuple[Scope, asyncio.Queue]] = {}

    def publish(self, decisions: list[Decision]) -> None:
        """Called after every commit: keep the decisions (as they are: turned into JSON only
        when a dashboard asks, see :meth:`recent_items`) and push them to open dashboards."""
        now = time.time()
        if not self.sockets:  # the usual case: no dashboard open, one C-level extend
            self.recent.extend(zip(decisions, itertools.repeat(now)))
            return
        for d in decisions:
            self.recent.append((d, now))
            item = _feed_item(d, now)
            for scope, queue in self.sockets.values():
                if scope.sees(d.shop_id):
                    with contextlib.suppress(asyncio.QueueFull):
                        queue.put_nowait({"type": "decision", **item})

    def recent_items(self, shops: Container[str], last: int = 50) -> list[dict[str, Any]]:
        """The last ``last`` decisions of ``shops``, newest last, as the dashboard shows them."""
        picked = [(d, ts) for d, ts in self.recent if d.shop_id in shops][-last:]
        return [_feed_item(d, ts) for d, ts in picked]


def _feed_item(d: Decision, ts: float) -> dict[str, Any]:
    return {**msgspec.to_builtins(d), "ts": ts}


FEED = web.AppKey("feed", Feed)
LOADER = web.AppKey("today_loader", asyncio.Task)


def dashboard_data(app: web.Application, scope: Scope) -> dict[str, Any]:
    service: Service = app[SERVICE]
    feed: Feed = app[FEED]
    figures: Today = app[TODAY]
    d = service.router.dispatcher
    now = time.time()
    shops = scope.shops
    queues: dict[str, dict[str, Any]] = {}
    convs = []
    totals = {"open": 0, "queued": 0, "reserved": 0, "assigned": 0, "bot": 0}
    for conv in d.conversations.values():
        if conv.shop_id not in shops:
            continue
        totals["open"] += 1
        totals[conv.state] = totals.get(conv.state, 0) + 1
        if conv.state == "queued":
            skill = conv.skill or "-"
            q = queues.setdefault(skill, {"skill": skill, "depth": 0, "oldest_wait_s": 0.0, "shops": {}})
            q["depth"] += 1
            q["shops"][conv.shop_id] = q["shops"].get(conv.shop_id, 0) + 1
            q["oldest_wait_s"] = max(q["oldest_wait_s"], round(now - (conv.queued_at or conv.opened_at), 1))
        since = service.waiting_since.get(conv.id)
        convs.append({"id": conv.id, "shop_id": conv.shop_id, "buyer_id": conv.buyer_id, "state": conv.state,
                      "agent_id": conv.agent_id, "skill": conv.skill, "priority": conv.priority,
                      "opened_at": conv.opened_at, "waiting_since": since, "reserved_until": conv.reserved_until})
    convs.sort(key=lambda c: (c["waiting_since"] is None, c["waiting_since"] or 0, -c["priority"]))
    agents = []
    online = 0
    today_fig = figures.figures(shops)
    for aid in scope.visible_agents():
        cfg = service.config.agents[aid]
        st = d.agents.get(aid)
        status = st.status if st else "offline"
        in_shift = st.in_shift if st else False
        online += status == "online" and in_shift  # 排班外 is not online, whatever the agent's own status
        agents.append({"id": aid, "name": cfg.name or aid, "skills": list(cfg.skills),
                       "shops": [s for s in agent_shops(service.config, aid) if s in shops], "status": status,
                       "in_shift": in_shift, "load": st.load if st else 0,
                       "max_concurrent": cfg.max_concurrent, "connected": aid in service.sessions,
                       "today": today_fig["agents"].get(aid),
                       "shift_starts": None if in_shift else cfg.shift.next_change(now)})
    coming = sorted((a for a in agents if a["shift_starts"] is not None), key=lambda a: (a["shift_starts"], a["id"]))
    return {"type": "dashboard", "server_time": now, "totals": {**totals, "agents_online": online},
            "next_on": [{"id": a["id"], "name": a["name"], "at": a["shift_starts"]} for a in coming[:5]],
            "queues": sorted(queues.values(), key=lambda q: (-q["depth"], q["skill"])), "agents": agents,
            "conversations": convs[:300], "today": today_fig, "alerts": _alerts(service),
            "shops": [{"id": s.id, "name": s.name or s.id, "platform": s.platform}
                      for s in service.config.shops.values() if s.id in shops],
            "decisions": feed.recent_items(shops)}


def _alerts(service: Service) -> dict[str, float]:
    """The dashboard's thresholds (``[defaults]``): waits and queue depths turn amber, then red."""
    d = service.config.main.defaults
    return {"wait_warn_s": d.wait_warn_s, "wait_alert_s": d.wait_alert_s, "reply_within_s": d.reply_within_s,
            "queue_warn": d.queue_warn, "queue_alarm": d.queue_alarm}


@gate("supervisor")
async def dashboard(request: web.Request, scope: Scope) -> web.Response:
    await request.app[TODAY].ready()
    return json_response(dashboard_data(request.app, scope))


_encode = msgspec.json.Encoder().encode


@gate("supervisor", ws=True)
async def supervisor_ws(request: web.Request, scope: Scope) -> web.StreamResponse:
    feed: Feed = request.app[FEED]
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=16 * 1024)
    await ws.prepare(request)
    book = request.app[BOOK]
    book.watch(ws, scope.account, request[EXPIRES], lambda code, message: ws.close(code=code, message=message))
    await request.app[TODAY].ready()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(2000)
    feed.sockets[ws] = (scope, queue)
    request.app[SOCKETS].add(ws)

    async def writer() -> None:
        last = 0.0
        while not ws.closed:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=max(0.05, last + PUSH_EVERY_S - time.monotonic()))
                await ws.send_str(_encode(item).decode())
            except TimeoutError:
                pass
            if time.monotonic() - last >= PUSH_EVERY_S:
                last = time.monotonic()
                await ws.send_str(_encode(dashboard_data(request.app, scope)).decode())

    task = asyncio.create_task(writer())
    try:
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        book.unwatch(ws)
        feed.sockets.pop(ws, None)
        request.app[SOCKETS].discard(ws)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
            await task
    return ws


# -- registration -------------------------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    """Add the pages, the endpoints and the feed to the service's app (called by ``make_app``)."""
    service = app[SERVICE]
    feed = Feed()
    app[FEED] = feed
    figures = app[TODAY] = Today(service)
    service.on_committed.append(feed.publish)
    service.on_journaled.append(figures.feed)

    async def start(app: web.Application) -> None:
        app[LOADER] = asyncio.create_task(app[TODAY].load())

    async def stop(app: web.Application) -> None:
        task = app[LOADER]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(ValueError):
            service.on_committed.remove(feed.publish)
        with contextlib.suppress(ValueError):
            service.on_journaled.remove(figures.feed)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    r = app.router
    r.add_get("/", root)
    r.add_get("/web/", static)
    r.add_get("/web/{name}", static)
    r.add_get("/web/i18n/{lang}", static)
    r.add_get("/v1/me", me)
    r.add_get("/v1/quick-replies", quick_replies)
    r.add_post("/v1/replies/check", check_reply)
    r.add_post("/v1/conversations/{cid}/transfer", transfer)
    r.add_get("/v1/today", today)
    r.add_get("/v1/dashboard", dashboard)
    r.add_get("/v1/supervisors/ws", supervisor_ws)
    r.add_get("/v1/aftersales", aftersales)


@gate()
async def aftersales(request: web.Request, scope: Scope) -> web.Response:
    """``GET /v1/aftersales[?shop_id=]``: open after-sale requests of the account's shops, with
    the buyer's open conversation (its state and agent) for the 售后 view to open."""
    service = request.app[SERVICE]
    shop_q = request.query.get("shop_id")
    shops = [scope.require_shop(shop_q)] if shop_q else sorted(scope.shops)
    items = await service.records.open_aftersales(shops)
    shared = getattr(service, "mirrored_conversations", None)  # the Redis backend: every shard's mirror, not ours only
    convs = (await shared([it.conversation_id for it in items if it.conversation_id]) if shared is not None
             else service.router.dispatcher.conversations)
    out = []
    for it in items:
        conv = convs.get(it.conversation_id or "")
        if conv is not None:
            it = msgspec.structs.replace(it, conversation_state=conv.state, agent_id=conv.agent_id)
        out.append(it)
    return json_response({"aftersales": out})
