"""The browser side of ``fenliu serve``: the agents' workbench (客服工作台) and the supervisors'
dashboard as static files (``router/web/``, no build step), plus the endpoints and the live feed
those pages need beyond the service's own API.

- ``GET /`` → ``/web/``: the login page, then ``workbench.html`` or ``dashboard.html``.
- ``GET /v1/me``: who the token belongs to (account, role, shops with names and platforms, the
  agent it works as, the skill groups it can transfer to) and the server's clock.
- ``GET /v1/quick-replies?conversation_id=…[&q=typed]``: the shop's 话术库, grouped, with
  placeholders filled from the conversation's buyer and order (``{order_id}`` stays visible
  when unknown), and the ids whose keyword occurs in ``q``.
- ``POST /v1/replies/check`` ``{"conversation_id" or "shop_id", "text"}``: the outbound filter
  run without sending: ``{"ok", "text", "reason", "hits": [{word, start, end, source}]}``.
- ``POST /v1/conversations/{cid}/transfer`` ``{"to_agent"}`` or ``{"to_skill"}``: 转接 by the
  agent holding the conversation or a supervisor of its shop.
- ``GET /v1/today``: today's figures (3-minute reply rate, average response time, replies,
  conversations received, per hour); an agent sees its own, a supervisor its shops'.
- ``GET /v1/dashboard``: queues per skill, agents, open conversations, recent decisions, today.
- ``GET /v1/supervisors/ws?token=…``: supervisors' live feed: ``decision`` frames as decisions
  commit and a ``dashboard`` frame every two seconds.

Every handler authenticates the token and checks the account's shops and role itself: the pages
are a convenience, never the authority.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections import deque
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import structlog
from aiohttp import WSMsgType, web

from router.accounts import Account
from router.ingest import explain
from router.models import Decision, Message, TransferEvent
from router.pipeline import InputError
from router.server import (
    SERVICE,
    SOCKETS,
    HTTPError,
    agent_of,
    authenticate,
    error,
    json_response,
    require_shop,
)
from router.service import Service

log = structlog.get_logger("fenliu.workbench")

WEB_DIR = Path(__file__).resolve().parent / "web"
FEED_KEEP = 200
PUSH_EVERY_S = 2.0
POLL_EVERY_S = 2.0

_NAME = re.compile(r"^[a-z0-9_-]+\.(html|js|css|svg|png)$")
_TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
          "css": "text/css; charset=utf-8", "svg": "image/svg+xml", "png": "image/png"}
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src * data: blob:; "
        "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")



# -- static files ----------------------------------------------------------------------------------


async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/web/")


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name") or "index.html"
    path = WEB_DIR / name
    if not _NAME.match(name) or not path.is_file():
        return error(404, f"no such page {name!r}")
    return web.FileResponse(path, headers={"Content-Type": _TYPES[name.rsplit(".", 1)[1]],
                                           "Cache-Control": "no-cache", "Content-Security-Policy": _CSP,
                                           "X-Content-Type-Options": "nosniff"})


# -- who am I ----------------------------------------------------------------------------------------


def _agent_shops(service: Service, aid: str) -> list[str]:
    cfg = service.config.agents[aid]
    return list(service.config.shops) if "*" in cfg.shops else [s for s in cfg.shops if s in service.config.shops]


def _visible_agents(service: Service, account: Account) -> list[str]:
    return [aid for aid in service.config.agents if any(account.may_see_shop(s) for s in _agent_shops(service, aid))]


async def me(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    account = await authenticate(request)
    aid = agent_of(service, account)
    shops = [{"id": s.id, "name": s.name or s.id, "platform": s.platform}
             for s in service.config.shops.values() if account.may_see_shop(s.id)]
    skills = sorted({sk for a in _visible_agents(service, account) for sk in service.config.agents[a].skills})
    agent = None
    if aid is not None:
        cfg = service.config.agents[aid]
        agent = {"id": aid, "name": cfg.name or aid, "skills": list(cfg.skills), "max_concurrent": cfg.max_concurrent,
                 "shops": _agent_shops(service, aid)}
    return json_response({"account": account.name, "role": account.role, "shops": shops, "agent_id": aid,
                          "agent": agent, "skills": skills, "server_time": time.time(),
                          "reply_window_s": service.config.main.defaults.reply_within_s})


# -- quick replies and the outbound check -----------------------------------------------------------


def _conversation_shop(service: Service, account: Account, cid: str) -> str:
    shop_id = cid.split(":", 1)[0]
    require_shop(account, shop_id)
    if shop_id not in service.config.shops:
        raise HTTPError(404, f"unknown shop {shop_id!r}")
    return shop_id


async def quick_replies(request: web.Request) -> web.Response:
    from plugins import bot

    service = request.app[SERVICE]
    account = await authenticate(request)
    cid = request.query.get("conversation_id")
    shop_id = request.query.get("shop_id")
    if cid:
        shop_id = _conversation_shop(service, account, cid)
    elif shop_id:
        require_shop(account, shop_id)
        if shop_id not in service.config.shops:
            return error(404, f"unknown shop {shop_id!r}")
    else:
        return error(400, "give conversation_id (or shop_id)")
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
    return json_response({"shop_id": shop_id, "conversation_id": cid,
                          "groups": [{"group": g, "items": v} for g, v in groups.items()], "suggested": suggested})


class CheckRequest(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    conversation_id: str | None = None
    shop_id: str | None = None


async def check_reply(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    account = await authenticate(request)
    try:
        req = msgspec.json.decode(await request.read(), type=CheckRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return error(400, explain(exc) + ' (expected {"conversation_id" or "shop_id", "text"})')
    if req.conversation_id:
        shop_id = _conversation_shop(service, account, req.conversation_id)
    elif req.shop_id:
        require_shop(account, req.shop_id)
        shop_id = req.shop_id
    else:
        return error(400, "give conversation_id or shop_id")
    try:
        result = await service.router.check_reply(shop_id, req.text, req.conversation_id, agent_of(service, account))
    except InputError as exc:
        return error(404, str(exc))
    reason = result.reason
    if not result.ok:
        words = "、".join(dict.fromkeys(h.word for h in result.hits))
        reason = reason or "blocked by the outbound filter"
        if words and words not in reason:
            reason = f"{reason} (forbidden: {words})"
    return json_response({"ok": result.ok, "text": result.text, "reason": reason, "hits": result.hits,
                          "flags": result.flags})


# -- moving conversations -----------------------------------------------------------------------------


class TransferRequest(msgspec.Struct, forbid_unknown_fields=True):
    to_agent: str | None = None
    to_skill: str | None = None


async def transfer(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    account = await authenticate(request)
    cid = request.match_info["cid"]
    shop_id = _conversation_shop(service, account, cid)
    conv = service.router.dispatcher.conversations.get(cid)
    if conv is None:
        return error(404, f"no open conversation {cid!r}")
    holder = agent_of(service, account)
    if not account.is_supervisor and (holder is None or conv.agent_id != holder):
        return error(403, f"forbidden: conversation {cid!r} is not yours, and moving others' needs a supervisor")
    try:
        req = msgspec.json.decode(await request.read(), type=TransferRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return error(400, explain(exc))
    if (req.to_agent is None) == (req.to_skill is None):
        return error(400, 'give exactly one of "to_agent" or "to_skill"')
    if req.to_agent is not None and req.to_agent not in service.config.agents:
        return error(404, f"unknown agent {req.to_agent!r}")
    try:
        moved = await service.event(TransferEvent(cid, req.to_agent, req.to_skill))
    except InputError as exc:
        return error(409, str(exc))
    log.info("transferred", by=account.name, shop_id=shop_id, conversation_id=cid, to_agent=req.to_agent,
             to_skill=req.to_skill)
    return json_response({"conversation_id": cid, "moved": moved})


# -- today's figures ------------------------------------------------------------------------------------


@dataclass
class _Figures:
    messages: int = 0
    conversations: int = 0
    replies: int = 0
    answered: int = 0
    latency_sum: float = 0.0
    in_time: int = 0
    missed: int = 0

    def add(self, other: _Figures) -> None:
        for f in self.__dataclass_fields__:
            setattr(self, f, getattr(self, f) + getattr(other, f))

    def as_json(self, pending: int = 0) -> dict[str, Any]:
        judged = self.in_time + self.missed
        return {"messages": self.messages, "conversations": self.conversations, "replies": self.replies,
                "answered": self.answered, "in_time": self.in_time, "missed": self.missed, "pending": pending,
                "reply_rate": round(self.in_time / judged, 4) if judged else None,
                "avg_response_s": round(self.latency_sum / self.answered, 1) if self.answered else None}


@dataclass
class _Wait:
    shop_id: str
    start: float
    counted: bool


@dataclass
class Today:
    """Today's figures, read incrementally from the store through a read-only connection (WAL
    readers never block the writer), so they survive restarts.

    A *wait* starts with a buyer message routed to a human (``assigned`` or ``queued``) while no
    earlier one is unanswered, and ends with the next agent reply. Its response time is the
    reply's time minus the start. The 3-minute reply rate counts each session's first wait (as
    ``fenliu stats`` does) when it started inside ``defaults.reply_window``: answered within
    ``defaults.reply_within_s``, against those answered later, closed unanswered, or still
    unanswered after it.
    """

    service: Service
    day: str = ""
    day_start: float = 0.0
    seq: int = 0
    decision_id: int = 0
    outbox_id: int = 0
    waits: dict[str, _Wait] = field(default_factory=dict)
    by_key: dict[tuple[str, str], _Figures] = field(default_factory=dict)
    hours: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    received: set[tuple[str, str]] = field(default_factory=set)
    answered_once: set[str] = field(default_factory=set)
    updated: float = 0.0
    conn: sqlite3.Connection | None = None

    def _tz(self) -> ZoneInfo:
        return ZoneInfo(self.service.config.main.defaults.timezone)

    def _fig(self, shop_id: str, agent_id: str | None) -> _Figures:
        key = (shop_id, agent_id or "")
        fig = self.by_key.get(key)
        if fig is None:
            fig = self.by_key[key] = _Figures()
        return fig

    def _hour(self, shop_id: str, ts: float) -> list[int]:
        h = int((ts - self.day_start) // 3600)
        row = self.hours.get((shop_id, h))
        if row is None:
            row = self.hours[(shop_id, h)] = [0, 0, 0]
        return row

    def _in_window(self, shop_id: str, ts: float) -> bool:
        """Whether a wait starting at ``ts`` counts for the 3-minute rate: the session's first
        (later waits of an answered session do not), inside ``defaults.reply_window`` in the
        shop's time zone — the same rule as ``fenliu stats``."""
        defaults = self.service.config.main.defaults
        shop = self.service.config.shops.get(shop_id)
        local = datetime.fromtimestamp(ts, ZoneInfo((shop.timezone if shop else None) or defaults.timezone))
        return defaults.in_reply_window(local.hour * 60 + local.minute)

    def poll(self) -> None:
        """Read what was committed since the last poll (runs in a worker thread)."""
        tz = self._tz()
        now = time.time()
        local = datetime.fromtimestamp(now, tz)
        day = local.date().isoformat()
        if self.conn is None:
            self.conn = sqlite3.connect(f"file:{self.service.store.path}?mode=ro", uri=True, check_same_thread=False)
        c = self.conn
        c.execute("BEGIN")
        try:
            if day != self.day:
                self._reset(c, day, datetime(local.year, local.month, local.day, tzinfo=tz).timestamp())
            self._read(c, now)
        finally:
            c.execute("COMMIT")
        self.updated = now

    def _reset(self, c: sqlite3.Connection, day: str, start: float) -> None:
        self.day, self.day_start = day, start
        self.waits.clear()
        self.by_key.clear()
        self.hours.clear()
        self.received.clear()
        self.answered_once.clear()
        self.seq = _first_at(c, "journal", "seq", "clock", start) - 1
        self.decision_id = _first_at(c, "decisions", "id", "seq", self.seq + 1) - 1
        self.outbox_id = _first_at(c, "outbox", "id", "ts", start) - 1

    def _read(self, c: sqlite3.Connection, now: float) -> None:
        events: list[tuple[float, int, tuple]] = []
        last_seq = self.seq
        for seq, clock, shop_id, cid, action in c.execute(
                "SELECT j.seq, j.clock, j.shop_id, j.conversation_id, d.action FROM journal j "
                "LEFT JOIN decisions d ON d.seq = j.seq AND d.msg_id = j.msg_id AND d.shop_id = j.shop_id "
                "WHERE j.seq > ? AND j.kind = 'message' ORDER BY j.seq", (self.seq,)):
            events.append((clock, 0, ("message", shop_id, cid, action)))
            last_seq = max(last_seq, seq)
        for seq, clock, shop_id, cid in c.execute(
                "SELECT seq, clock, shop_id, conversation_id FROM journal WHERE seq > ? AND kind = 'event' "
                "AND CAST(body AS TEXT) LIKE '%\"type\":\"close\"%'", (self.seq,)):
            events.append((clock, 2, ("close", shop_id, cid, None)))
            last_seq = max(last_seq, seq)
        top = c.execute("SELECT max(seq) FROM journal").fetchone()[0]
        self.seq = max(last_seq, top or 0)
        for shop_id, agent_id, cid in c.execute(
                "SELECT shop_id, agent_id, conversation_id FROM decisions WHERE id > ? AND action = 'assigned' "
                "AND agent_id IS NOT NULL", (self.decision_id,)):
            if (agent_id, cid) not in self.received:
                self.received.add((agent_id, cid))
                self._fig(shop_id, agent_id).conversations += 1
        top = c.execute("SELECT max(id) FROM decisions").fetchone()[0]
        self.decision_id = max(self.decision_id, top or 0)
        for rid, ts, shop_id, cid, agent_id in c.execute(
                "SELECT id, ts, shop_id, conversation_id, agent_id FROM outbox WHERE id > ? ORDER BY id", (self.outbox_id,)):
            events.append((ts, 1, ("reply", shop_id, cid, agent_id)))
            self.outbox_id = max(self.outbox_id, rid)
        events.sort(key=lambda e: (e[0], e[1]))
        for ts, _, (kind, shop_id, cid, extra) in events:
            if ts < self.day_start:
                continue
            if kind == "message":
                self._fig(shop_id, None).messages += 1
                self._hour(shop_id, ts)[0] += 1
                if extra in ("assigned", "queued") and cid not in self.waits:
                    first = cid not in self.answered_once
                    self.waits[cid] = _Wait(shop_id, ts, first and self._in_window(shop_id, ts))
            elif kind == "reply":
                fig = self._fig(shop_id, extra)
                fig.replies += 1
                wait = self.waits.pop(cid, None)
                self.answered_once.add(cid)
                if wait is not None:
                    latency = max(0.0, ts - wait.start)
                    fig.answered += 1
                    fig.latency_sum += latency
                    if wait.counted:
                        row = self._hour(shop_id, wait.start)
                        if latency <= self.service.config.main.defaults.reply_within_s:
                            fig.in_time += 1
                            row[1] += 1
                        else:
                            fig.missed += 1
                        row[2] += 1
            elif kind == "close":
                self.answered_once.discard(cid)
                wait = self.waits.pop(cid, None)
                if wait is not None and wait.counted:
                    self._fig(shop_id, None).missed += 1
                    self._hour(shop_id, wait.start)[2] += 1

    def figures(self, shops: set[str] | None = None, agent_id: str | None = None) -> dict[str, Any]:
        """Totals for ``shops`` (all when ``None``), or for one agent; with hourly series."""
        now = time.time()
        total = _Figures()
        per_agent: dict[str, _Figures] = {}
        for (shop_id, aid), fig in self.by_key.items():
            if shops is not None and shop_id not in shops:
                continue
            if agent_id is not None and aid != agent_id:
                continue
            total.add(fig)
            if aid:
                per_agent.setdefault(aid, _Figures()).add(fig)
        overdue = pending = 0
        for cid, wait in self.waits.items():
            if (shops is not None and wait.shop_id not in shops) or not wait.counted:
                continue
            if agent_id is not None and self.service.owner.get(cid) != agent_id:
                continue
            if now - wait.start > self.service.config.main.defaults.reply_within_s:
                overdue += 1
            else:
                pending += 1
        total.missed += overdue
        hours = []
        for h in range(24):
            row = [0, 0, 0]
            for (shop_id, hh), vals in self.hours.items():
                if hh == h and (shops is None or shop_id in shops):
                    row = [a + b for a, b in zip(row, vals, strict=True)]
            hours.append({"hour": h, "messages": row[0], "in_time": row[1], "judged": row[2]})
        out = {"day": self.day, "updated": self.updated, **total.as_json(pending),
               "reply_window_s": self.service.config.main.defaults.reply_within_s}
        if agent_id is None:
            out["hours"] = hours
            out["agents"] = {aid: f.as_json() for aid, f in sorted(per_agent.items())}
        return out


TODAY = web.AppKey("today", Today)


def _first_at(c: sqlite3.Connection, table: str, key: str, col: str, value: float) -> int:
    """The smallest ``key`` whose ``col`` is at least ``value`` (``col`` grows with ``key``),
    by binary search on the primary key; one past the end when there is none."""
    top = c.execute(f"SELECT max({key}) FROM {table}").fetchone()[0]
    if top is None:
        return 1
    lo, hi = 1, top + 1
    while lo < hi:
        mid = (lo + hi) // 2
        row = c.execute(f"SELECT {key}, {col} FROM {table} WHERE {key} >= ? ORDER BY {key} LIMIT 1", (mid,)).fetchone()
        if row is None or row[1] >= value:
            hi = mid
        else:
            lo = mid + 1
    return lo


async def _poll_today(app: web.Application) -> None:
    today: Today = app[TODAY]
    while True:
        try:
            await asyncio.to_thread(today.poll)
        except sqlite3.Error as exc:
            log.warning("today_poll_failed", error=str(exc))
            if today.conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    today.conn.close()
                today.conn = None
        await asyncio.sleep(POLL_EVERY_S)


def _shops_of(service: Service, account: Account) -> set[str]:
    return {s for s in service.config.shops if account.may_see_shop(s)}


async def today(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    account = await authenticate(request)
    figures: Today = request.app[TODAY]
    shops = _shops_of(service, account)
    if account.is_supervisor:
        return json_response(figures.figures(shops))
    aid = agent_of(service, account)
    if aid is None:
        return error(403, f"account {account.name!r} is neither an agent nor a supervisor")
    st = service.router.dispatcher.agents.get(aid)
    return json_response({"agent_id": aid, "status": st.status if st else "offline",
                          **figures.figures(shops, agent_id=aid)})


# -- the supervisors' dashboard and live feed ---------------------------------------------------------


class Feed:
    """Committed decisions for the dashboard: the last few for a new page, live to sockets."""

    def __init__(self) -> None:
        self.recent: deque[tuple[Decision, float]] = deque(maxlen=FEED_KEEP)
        self.sockets: dict[web.WebSocketResponse, tuple[Account, asyncio.Queue]] = {}

    def publish(self, decisions: list[Decision]) -> None:
        """Called after every commit: keep the decisions (as they are: turned into JSON only
        when a dashboard asks, see :meth:`recent_items`) and push them to open dashboards."""
        now = time.time()
        for d in decisions:
            self.recent.append((d, now))
            if self.sockets:
                item = _feed_item(d, now)
                for account, queue in self.sockets.values():
                    if account.may_see_shop(d.shop_id):
                        with contextlib.suppress(asyncio.QueueFull):
                            queue.put_nowait({"type": "decision", **item})

    def recent_items(self, shops: Container[str], last: int = 50) -> list[dict[str, Any]]:
        """The last ``last`` decisions of ``shops``, newest last, as the dashboard shows them."""
        picked = [(d, ts) for d, ts in self.recent if d.shop_id in shops][-last:]
        return [_feed_item(d, ts) for d, ts in picked]


def _feed_item(d: Decision, ts: float) -> dict[str, Any]:
    return {**msgspec.to_builtins(d), "ts": ts}


FEED = web.AppKey("feed", Feed)
POLLER = web.AppKey("workbench_poller", asyncio.Task)


def dashboard_data(app: web.Application, account: Account) -> dict[str, Any]:
    service: Service = app[SERVICE]
    feed: Feed = app[FEED]
    figures: Today = app[TODAY]
    d = service.router.dispatcher
    now = time.time()
    shops = _shops_of(service, account)
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
    for aid in _visible_agents(service, account):
        cfg = service.config.agents[aid]
        st = d.agents.get(aid)
        status = st.status if st else "offline"
        online += status == "online"
        agents.append({"id": aid, "name": cfg.name or aid, "skills": list(cfg.skills),
                       "shops": [s for s in _agent_shops(service, aid) if s in shops], "status": status,
                       "in_shift": st.in_shift if st else False, "load": st.load if st else 0,
                       "max_concurrent": cfg.max_concurrent, "connected": aid in service.sessions,
                       "today": today_fig["agents"].get(aid)})
    return {"type": "dashboard", "server_time": now, "totals": {**totals, "agents_online": online},
            "queues": sorted(queues.values(), key=lambda q: (-q["depth"], q["skill"])), "agents": agents,
            "conversations": convs[:300], "today": today_fig,
            "shops": [{"id": s.id, "name": s.name or s.id, "platform": s.platform}
                      for s in service.config.shops.values() if s.id in shops],
            "decisions": feed.recent_items(shops)}


async def _supervisor(request: web.Request) -> Account:
    account = await authenticate(request)
    if not account.is_supervisor:
        raise HTTPError(403, f"forbidden: the dashboard needs a supervisor or admin account, not {account.name!r}")
    return account


async def dashboard(request: web.Request) -> web.Response:
    account = await _supervisor(request)
    return json_response(dashboard_data(request.app, account))


_encode = msgspec.json.Encoder().encode


async def supervisor_ws(request: web.Request) -> web.StreamResponse:
    account = await _supervisor(request)
    feed: Feed = request.app[FEED]
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=16 * 1024)
    await ws.prepare(request)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(2000)
    feed.sockets[ws] = (account, queue)
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
                await ws.send_str(_encode(dashboard_data(request.app, account)).decode())

    task = asyncio.create_task(writer())
    try:
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
    finally:
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
    app[TODAY] = Today(service)
    service.on_committed.append(feed.publish)

    async def start(app: web.Application) -> None:
        app[POLLER] = asyncio.create_task(_poll_today(app))

    async def stop(app: web.Application) -> None:
        task = app[POLLER]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(ValueError):
            service.on_committed.remove(feed.publish)
        conn = app[TODAY].conn
        if conn is not None:
            conn.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    r = app.router
    r.add_get("/", root)
    r.add_get("/web/", static)
    r.add_get("/web/{name}", static)
    r.add_get("/v1/me", me)
    r.add_get("/v1/quick-replies", quick_replies)
    r.add_post("/v1/replies/check", check_reply)
    r.add_post("/v1/conversations/{cid}/transfer", transfer)
    r.add_get("/v1/today", today)
    r.add_get("/v1/dashboard", dashboard)
    r.add_get("/v1/supervisors/ws", supervisor_ws)
