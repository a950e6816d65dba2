"""The HTTP face of ``fenliu serve`` (aiohttp): ingest, webhooks, accounts, the agent
WebSocket, the workbench and ops endpoints. Handlers only check, decode and wait; routing and
storage happen in :class:`router.service.service.Service`.

Every refusal is a JSON body ``{"error": "<code>", "message": "<reason>"}``: ``error`` is a
stable machine code (:data:`CODES` by status unless a handler names a finer one), ``message`` a
reason a person can act on; never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
import structlog
from aiohttp import web
from aiohttp.hdrs import CONTENT_ENCODING, EXPECT
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from adapters import WebhookError, adapter_class
from router.storage import accounts as acct
from router.service.access import (
    BOOK,
    EXPIRES,
    SERVICE,
    SOCKETS,
    TICKETS,
    AccountBook,
    HTTPError,
    Scope,
    Tickets,
    agent_of,
    agent_shops,
    check_routes,
    gate,
    public,
    signed,
)
from router.core.config import Config
from router.core.i18n import _, t
from router.core import i18n
from router.service.login import LoginGuard, LoginRefused
from router.storage.stats import parse_period
from router.core.ingest import TOO_DEEP, decode_batch, explain, split_batch
from router.core.models import AgentStatus, AgentStatusEvent, Message, RatingEvent
from router.core.pipeline import InputError
from router.core.signing import SIGNATURE_HEADER, check_signature
from router.service.errors import Overloaded
from router.service.service import Service

log = structlog.get_logger("fenliu.server")

DEMO_SECRET = "fenliu-demo-secret"
DEMO_PASSWORD = "demo1234"

_encode = msgspec.json.Encoder(enc_hook=i18n.enc_hook).encode  # a Text left in a body: the asker's language



def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_encode(data), status=status, content_type="application/json", headers=headers)


# The stable code of a refusal that names no finer one; clients switch on ``error``, people read ``message``.
CODES: dict[int, str] = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                         405: "method_not_allowed", 408: "request_timeout", 409: "conflict", 413: "too_large",
                         415: "unsupported_media_type", 422: "invalid", 429: "too_many_requests",
                         431: "headers_too_large", 500: "internal", 503: "unavailable"}


def error_body(status: int, reason: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    """``message`` in the current language (:mod:`router.core.i18n`: the request's ``Accept-Language``)."""
    return {"error": code or CODES.get(status, f"http_{status}"), "message": t(reason), **extra}


def error(status: int, reason: str, code: str | None = None, headers: dict[str, str] | None = None,
          **extra: Any) -> web.Response:
    return json_response(error_body(status, reason, code, **extra), status, headers)


# -- authentication and isolation: router/service/access.py ---------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _json_errors(request: web.BaseRequest, handler: Callable[..., Awaitable[web.StreamResponse]],
                       *args: Any) -> web.StreamResponse:
    """``handler(request, *args)`` with its errors as JSON bodies: ours (:class:`HTTPError`),
    aiohttp's 4xx, and anything unexpected as a 500 whose traceback goes to the log. Each 4xx
    is one ``request_rejected`` log line (:func:`log_rejection`), never a traceback. Messages are
    in the language a ``?lang=`` names (a browser's WebSocket cannot set headers), else the one the
    request's ``Accept-Language`` prefers, else the default (zh-CN)."""
    lang = i18n.use(i18n.normalize(request.query.get("lang")) or i18n.negotiate(request.headers.get("Accept-Language")))
    try:
        return await _json_errors_in(request, handler, *args)
    finally:
        i18n.reset(lang)


async def _json_errors_in(request: web.BaseRequest, handler: Callable[..., Awaitable[web.StreamResponse]],
                          *args: Any) -> web.StreamResponse:
    try:
        resp = await handler(request, *args)
    except HTTPError as exc:
        resp = error(exc.status, exc.reason, exc.code, exc.headers)
    except Overloaded as exc:  # the journal failed under an event, a reply or a context push
        return error(503, t(exc), headers={"Retry-After": "1"})
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        resp = error(exc.status, exc.reason, path=request.path)
    except RecursionError:  # msgspec's guard, for a body nested deeper than any decoder bounded
        resp = error(400, TOO_DEEP)
    except (HttpProcessingError, RequestPayloadError) as exc:  # a body that does not decode (bad gzip)
        cause = exc.__cause__ if isinstance(exc, RequestPayloadError) else exc
        resp = error(400, _("the body could not be read: {detail}", detail=str(getattr(cause, 'message', None) or exc)))
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:  # noqa: BLE001 - the caller gets a reason, the log gets the traceback
        log.exception("handler_failed", path=request.path)
        return error(500, _("internal error (logged)"))
    if 400 <= resp.status < 500:
        log_rejection(request, resp)
    return resp


def log_rejection(request: web.BaseRequest, resp: web.StreamResponse) -> None:
    """One warning line for a refused request: what, from where, and the body's code and reason
    (read back from the JSON body, so every handler's refusals are logged alike)."""
    code = reason = None
    body = getattr(resp, "body", None)
    if isinstance(body, bytes) and resp.content_type == "application/json":
        with contextlib.suppress(msgspec.DecodeError):
            data = msgspec.json.decode(body)
            if isinstance(data, dict):
                code, reason = data.get("error"), str(data.get("message", ""))[:300]
    log.warning("request_rejected", method=request.method, path=request.path[:200], status=resp.status,
                error=code, reason=reason, peer=request.remote)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await _json_errors(request, handler)


# -- ingest ----------------------------------------------------------------------------------------


async def _read_body(request: web.BaseRequest, limit: int) -> bytes | web.Response:
    length = request.content_length
    if length is not None and length > limit:
        return error(413, _("body of {length} bytes is over the limit of {limit} (server.max_body_bytes)",
                            length=length, limit=limit))
    try:
        if length is not None and not request.headers.get(CONTENT_ENCODING):
            return await request.content.readexactly(length)  # the usual case: one read of a known size
        return await request.read()  # compressed or chunked: read() counts the decoded bytes against the limit
    except asyncio.IncompleteReadError:
        raise web.HTTPBadRequest(reason=_("body shorter than Content-Length")) from None
    except web.HTTPRequestEntityTooLarge:
        return error(413, _("body is over the limit of {limit} bytes (server.max_body_bytes)", limit=limit))


async def _signed_body(request: web.Request, service: Service, shop_id: str) -> bytes | web.Response:
    """The raw body of a request a shop's bridge signed, or the refusal (404, 413, 401)."""
    shop = service.config.shops.get(shop_id)
    if shop is None:
        return error(404, _("unknown shop {shop!r}", shop=shop_id))
    body = await _read_body(request, service.config.main.server.max_body_bytes)
    if isinstance(body, web.Response):
        service.metrics.rejected.labels("413").inc()
        return body
    secret = shop.secret
    if secret is None:
        service.metrics.rejected.labels("401").inc()
        return error(401, _("shop {shop!r} has no secret configured (set the environment variable {env}); "
                            "unsigned ingest is refused", shop=shop_id, env=shop.secret_env or "<secret_env in shops.toml>"))
    why = check_signature(secret, body, request.headers.get(SIGNATURE_HEADER))
    if why is not None:
        service.metrics.rejected.labels("401").inc()
        return error(401, why)
    return body


@signed
async def ingest(request: web.Request) -> web.Response:
    """``POST /v1/shops/{shop_id}/messages`` through the app's router: what :class:`IngestFirst`
    does not take, such as a request with ``Expect``."""
    return await _ingest(request, request.app[SERVICE], request.match_info["shop_id"])


async def _ingest(request: web.BaseRequest, service: Service, shop_id: str) -> web.Response:
    server = service.config.main.server
    body = await _signed_body(request, service, shop_id)
    if isinstance(body, web.Response):
        return body
    if body.lstrip()[:1] != b"[":
        items: list[msgspec.Raw] | list[bytes] = [body]  # one message, the usual case: decoded once, typed, below
    else:
        try:
            items = split_batch(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            service.metrics.rejected.labels("400").inc()
            return error(400, explain(exc))
        if not items:
            return error(400, _("empty batch: send one message or a non-empty array"))
        if len(items) > server.max_batch:
            service.metrics.rejected.labels("413").inc()
            return error(413, _("batch of {n} messages is over the limit of {limit} (server.max_batch)",
                                n=len(items), limit=server.max_batch))
    batch = decode_batch(items, shop_id)  # a bad item, even a lone one, is named by its index
    return await _submit(service, batch.messages, batch.index, batch.errors)


async def _submit(service: Service, good: list[Message], index: list[int], errors: list[dict[str, Any]],
                  ok_body: Any = None) -> web.Response:
    result = None
    if good:
        try:
            result = await service.ingest(good)
        except Overloaded as exc:
            service.metrics.rejected.labels("503").inc()
            return error(503, t(exc) or _("overloaded: the ingest queue is full, retry later"), "overloaded",
                         headers={"Retry-After": "1"}, queue_max=service.config.main.server.ingest_queue_max)
        for j, reason in result.errors:
            errors.append({"index": index[j], "msg_id": good[j].msg_id, "reason": reason})
    body: dict[str, Any] = {
        "accepted": len(result.accepted) if result else 0,
        "duplicates": len(result.duplicates) if result else 0,
    }
    if errors:
        errors.sort(key=lambda e: e["index"])
        service.metrics.rejected.labels("400").inc()
        first = errors[0]
        reason = _("item {index}: {reason}", index=first["index"], reason=first["reason"])
        if len(errors) > 1:
            reason = _("{reason} (and {n} more)", reason=reason, n=len(errors) - 1)
        body = {**error_body(400, reason, "invalid_items"),
                "errors": errors, **body,
                "accepted_ids": result.accepted if result else [],
                "duplicate_ids": result.duplicates if result else []}
        if ok_body is not None:  # a platform's answer for the items taken (e.g. PMC acks)
            body["response"] = ok_body
        return json_response(body, 400)
    if ok_body is not None:
        return json_response(ok_body, 200)
    return json_response(body, 202)


@signed
async def webhook(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    platform = request.match_info["platform"]
    shop_id = request.match_info["shop_id"]
    shop = service.config.shops.get(shop_id)
    if shop is None:
        return error(404, _("unknown shop {shop!r}", shop=shop_id))
    cls = adapter_class(platform)
    if cls is None:
        return error(404, _("unknown platform adapter {platform!r}", platform=platform))
    body = await _read_body(request, service.config.main.server.max_body_bytes)
    if isinstance(body, web.Response):
        return body
    adapter = service.adapters.get(shop_id)
    if adapter is None or adapter.name != platform:
        adapter = cls(shop, service)
    try:
        result = adapter.parse_webhook(request.headers, body)
    except WebhookError as exc:
        return error(exc.status, exc.reason)
    if result.context:
        await service.order_context(result.context)
    places = result.index if result.index is not None else range(len(result.messages))
    taken = [(i, m) for i, m in zip(places, result.messages, strict=True) if m.shop_id == shop_id]
    return await _submit(service, [m for _, m in taken], [i for i, _ in taken], list(result.errors),
                         ok_body=result.response)


# -- accounts ----------------------------------------------------------------------------------------


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    # Bounded: a guessed name is remembered for its lockout (router/service/login.py).
    account: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    password: Annotated[str, msgspec.Meta(max_length=1024)]


LOGIN = web.AppKey("login", LoginGuard)


@public
async def login(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        req = msgspec.json.decode(await request.read(), type=LoginRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return error(400, _("{reason} (expected {shape})", reason=explain(exc),
                            shape='{"account": "main" or "main:sub", "password": "..."}'))
    try:  # argon2 in the guard's pool, never on the loop nor in a store transaction
        account = await request.app[LOGIN].login(req.account, req.password, request.remote or "unknown")
    except LoginRefused as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return error(exc.status, exc.message, exc.code, headers)
    if account.disabled:
        return error(403, _("account {account!r} is disabled", account=account.name), "account_disabled")
    token, expires = acct.issue_token(service.token_key, account, service.config.main.server.token_ttl_s)
    log.info("login", account=account.name, role=account.role)
    return json_response({"token": token, "expires": expires, "account": account.name, "role": account.role,
                          "shops": list(account.shops), "agent_id": agent_of(service.config, account)})


# -- workbench and ops -----------------------------------------------------------------------------


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


class StatusRequest(msgspec.Struct, forbid_unknown_fields=True):
    status: AgentStatus


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
async def stats(request: web.Request, scope: Scope) -> web.Response:
    """Figures of the scope's shops; the service-wide ones (queues, journal, invariants) only
    for an all-shops account, since they count every client's traffic."""
    service = request.app[SERVICE]
    d = service.router.dispatcher
    shops: dict[str, dict[str, Any]] = {}
    for sid in service.config.shops:
        if scope.sees(sid):
            shops[sid] = {"open": 0, "queued": 0, "reserved": 0, "assigned": 0, "agents_online": d.online_count(sid)}
    for conv in d.conversations.values():
        s = shops.get(conv.shop_id)
        if s is not None:
            s["open"] += 1
            if conv.state in s:
                s[conv.state] += 1
    body: dict[str, Any] = {"shops": shops}
    if scope.all_shops:
        body.update(ingest_queue=service.pending_ingest, outbox_pending=service.outbox_pending(),
                    journal_seq=service._seq)
    try:
        since, until = parse_period(request.query.get("from"), request.query.get("to"),
                                    service.config.main.defaults.timezone)
    except ValueError as exc:
        return error(400, str(exc))
    shop_q = request.query.get("shop")
    if shop_q is not None:
        scope.require_shop(shop_q)
    agent_q = request.query.get("agent")
    if scope.role == "agent":
        agent_q = scope.agent_id or scope.account.name
    visible = [sid for sid in service.config.shops if scope.sees(sid)]
    config = service.config
    period = await service.records.stats(config, since=since, until=until, shop=shop_q, agent=agent_q, shops=visible)
    body["period"] = msgspec.to_builtins(period)
    if scope.role == "admin" and scope.all_shops:
        try:
            d.check_invariants()
            body["invariants"] = "ok"
        except AssertionError as exc:
            body["invariants"] = f"broken: {exc}"
    return json_response(body)


class ProfileRequest(msgspec.Struct, forbid_unknown_fields=True):
    tags: list[str] | None = None
    add_tags: list[str] = []
    note: str | None = None


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


@signed
async def rating(request: web.Request) -> web.Response:
    """A buyer's satisfaction rating, signed by the shop's bridge like messages are."""
    service = request.app[SERVICE]
    shop_id = request.match_info["shop_id"]
    body = await _signed_body(request, service, shop_id)
    if isinstance(body, web.Response):
        return body
    try:
        event = msgspec.json.decode(body, type=RatingEvent)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return error(400, _("{reason} (expected {shape})", reason=explain(exc),
                            shape='{"type": "rating", "conversation_id", "score": 1-5}'))
    if not event.conversation_id.startswith(f"{shop_id}:"):
        return error(400, _("conversation {cid!r} is not of shop {shop!r}", cid=event.conversation_id, shop=shop_id))
    await service.event(event)
    return json_response({"accepted": 1}, 202)


@gate("admin", all_shops=True)
async def reload(request: web.Request, scope: Scope) -> web.Response:
    """Reloading changes every shop's routing: only an admin permitted all shops may."""
    service = request.app[SERVICE]
    account = scope.account
    force = request.query.get("force", "").lower() in ("1", "true", "yes")
    body = await request.read()
    if body.strip():
        try:
            force = msgspec.json.decode(body, type=ReloadRequest).force or force
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return error(400, _("{reason} (expected no body, or {shape})", reason=explain(exc), shape='{"force": true|false}'))
    result = await service.reloader.reload(f"admin:{account.name}" + (":force" if force else ""), force=force)
    if result.refused:
        return error(409, _("reload refused: the new configuration is valid but would take something away; the running "
                            "one is kept (fix the files, or repeat with ?force=1 or {force})", force='{"force": true}'),
                     "config_refused",
                     errors=[t(e) for e in result.errors])
    if not result.ok:
        return error(422, _("configuration rejected; the running one is kept"), "config_rejected", errors=[t(e) for e in result.errors])
    config = service.config
    return json_response({"reloaded": True, "generation": result.generation,
                          "shops": len(config.shops), "agents": len(config.agents), "forced": [t(e) for e in result.forced]})


class ReloadRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/admin/reload``: ``force`` applies a valid configuration the guards refused
    (an emptied file, a shop left without agents, an outbound filter turned off)."""

    force: bool = False


@public
async def healthz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    ok = service.ready
    shared = service.shared_health() if hasattr(service, "shared_health") else {}
    status = "ok" if ok else "failed" if getattr(service, "failed", None) else "starting"
    return json_response({"status": status, "reason": getattr(service, "failed", None), "uptime_s": round(time.time() - service.started, 3),
                          "journal_seq": service._seq, "ingest_queue": service.pending_ingest,
                          "connected_agents": len(service.sessions), **shared}, 200 if ok else 503)


@public
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text; with ``server.metrics_token_env`` set, only for that bearer token (the
    figures name shops and agents). A server listening beyond loopback asks for the token of
    :data:`DEFAULT_METRICS_TOKEN_ENV` when none is configured."""
    service = request.app[SERVICE]
    env = service.config.main.server.metrics_token_env
    if not env and not _is_loopback(request.app[LISTEN].get("host")):
        env = DEFAULT_METRICS_TOKEN_ENV
    if env:
        token = os.environ.get(env, "")
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not token:
            raise HTTPError(401, _("the metrics token is not set: export {env}", env=env))
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode()):
            raise HTTPError(401, _("a bearer token is required for /metrics (server.metrics_token_env)"))
    body = await asyncio.get_running_loop().run_in_executor(None, service.metrics.render)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


@gate(ws=True)
async def agent_ws(request: web.Request, scope: Scope) -> web.StreamResponse:
    from router.service.ws import agent_socket

    service = request.app[SERVICE]
    if scope.agent_id is None:
        return error(403, _("account {account!r} is not an agent (set agent_id, or account in agents.toml)",
                            account=scope.account.name),
                     "not_an_agent")
    if service.config.main.storage.backend == "redis":
        from router.service.redis.ws import agent_socket as shared_agent_socket

        return await shared_agent_socket(request, service, scope)  # type: ignore[arg-type]
    return await agent_socket(request, service, scope)


LISTEN = web.AppKey("listen", dict)
DEFAULT_METRICS_TOKEN_ENV = "FENLIU_METRICS_TOKEN"


def _is_loopback(host: str | None) -> bool:
    import ipaddress

    if not host or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class TicketResponse(msgspec.Struct):
    ticket: str
    expires: float


@gate()
async def ws_ticket(request: web.Request, scope: Scope) -> web.Response:
    """A single-use ticket that opens a WebSocket (``?ticket=``) within a few seconds: a browser
    cannot set the ``Authorization`` header on a WebSocket, and a token in a URL ends up in logs."""
    ticket, expires = request.app[TICKETS].issue(scope.account, request[EXPIRES])
    return json_response(TicketResponse(ticket, expires))


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[SOCKETS]):
        with contextlib.suppress(Exception):
            await ws.close(code=1001, message=b"server shutting down")


def make_app(service: Service) -> web.Application:
    i18n.configure(service.config.main.server.lang)
    app = web.Application(middlewares=[errors_middleware],
                          client_max_size=service.config.main.server.max_body_bytes)
    app[SERVICE] = service
    book = app[BOOK] = AccountBook(service)
    app[TICKETS] = Tickets()
    app[SOCKETS] = set()
    app[LISTEN] = {"host": service.config.main.server.host}
    app.on_startup.append(book.start)
    app.on_cleanup.append(book.stop)
    app.on_shutdown.append(_close_sockets)
    guard = app[LOGIN] = LoginGuard(service.store, service.config.main.server, service.metrics,
                                    lookup=service.records.lookup_blocking, rehash=service.records.rehash)
    app.on_cleanup.append(guard.cleanup)
    r = app.router
    r.add_post("/v1/shops/{shop_id}/messages", ingest)
    r.add_post("/v1/webhooks/{platform}/{shop_id}", webhook)
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    r.add_post("/v1/auth/login", login)
    r.add_post("/v1/auth/ws-ticket", ws_ticket)
    r.add_get("/v1/agents/ws", agent_ws)
    r.add_get("/v1/conversations", conversations)
    r.add_get("/v1/conversations/{cid}", conversation)
    r.add_get("/v1/agents", agents)
    r.add_put("/v1/agents/{agent_id}/status", agent_status)
    r.add_get("/v1/stats", stats)
    r.add_post("/v1/shops/{shop_id}/ratings", rating)
    r.add_get("/v1/shops/{shop_id}/buyers/{buyer_id}", get_profile)
    r.add_put("/v1/shops/{shop_id}/buyers/{buyer_id}", put_profile)
    r.add_post("/v1/admin/reload", reload)
    from router.service.openapi import openapi_handler
    r.add_get("/openapi.json", openapi_handler)
    from router.service.workbench import setup as setup_workbench
    setup_workbench(app)
    check_routes(app)
    return app


# -- the ingest fast path ------------------------------------------------------------------------------

_SHOPS, _MESSAGES = "/v1/shops/", "/messages"


class IngestFirst:
    """The HTTP server's request handler: ``POST /v1/shops/{shop_id}/messages``, the one route
    under sale-day load, is matched with two string tests and handled directly; everything else
    goes to ``fallback``, the app's own handler (its router, its middleware). Skipping the
    router, the match info and two middleware layers saves ≈ 5 % of the event loop's time per
    message (docs/service.md). Errors become the same JSON bodies either way
    (:func:`_json_errors`); a request with ``Expect`` takes the app's path, which answers it."""

    def __init__(self, service: Service, fallback: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]) -> None:
        self.service = service
        self.fallback = fallback

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if (request.method == "POST" and path.startswith(_SHOPS) and path.endswith(_MESSAGES)
                and EXPECT not in request.headers):
            shop_id = path[len(_SHOPS):-len(_MESSAGES)]
            if shop_id and "/" not in shop_id:
                return await _json_errors(request, _ingest, self.service, shop_id)
        return await self.fallback(request)


#: aiohttp's header limits, stated: a request line or one header line up to 8 KiB, at most 100
#: headers. Past them the client gets 431 (:meth:`_Connection.handle_error`) and is disconnected.
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 100


class _Connection(RequestHandler):
    """aiohttp's protocol for one connection, plus two things it lacks:

    - a deadline for each request head (``server.header_timeout_s``), counted from the
      connection's start or the head's first byte: a client that trickles its headers (slowloris)
      gets 408 and is closed, instead of holding a connection for aiohttp's hour-long keep-alive;
    - requests its parser refuses (malformed, headers too large) answered as JSON error bodies
      with one log line, where aiohttp writes plain text and logs a traceback.
    """

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_since: float | None = None  # when the head being waited for began
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_started(self._loop.time())

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter  # pending while the connection waits for a request's head
        if self._head_since is None and waiter is not None and not waiter.done():
            self._head_started(self._loop.time())
        super().data_received(data)
        if self._head_since is not None and (self._waiter is None or self._waiter.done()):
            self._head_since = None  # the head is in (or refused): the handler's own time starts

    def _head_started(self, now: float) -> None:
        self._head_since = now
        if self._head_timer is None:  # one lazy timer per connection, not one per request
            self._head_timer = self._loop.call_at(now + self._header_timeout, self._check_head)

    def _check_head(self) -> None:
        self._head_timer = None
        since = self._head_since
        if since is None or self.transport is None or self._force_close:
            return
        deadline = since + self._header_timeout
        if self._loop.time() < deadline:
            self._head_timer = self._loop.call_at(deadline, self._check_head)
            return
        reason = _("request head not complete within {seconds:g} s (server.header_timeout_s)", seconds=self._header_timeout)
        body = _encode(error_body(408, reason))
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        peer = self.transport.get_extra_info("peername")
        log.warning("request_rejected", method=None, path=None, status=408, error=CODES[408], reason=str(reason),
                    peer=peer[0] if isinstance(peer, tuple) else None)
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        if isinstance(kw.get("exc_info"), RequestPayloadError):
            return  # aiohttp draining a body that would not decode (bad gzip), after we refused it: logged then
        super().log_exception(*args, **kw)

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:  # a failure of ours, not the client's: aiohttp's answer and traceback
            return super().handle_error(request, status, exc, message)
        text = (message or (str(exc) if exc else "") or "malformed request")[:400]  # the parser's own words
        if isinstance(exc, LineTooLong) or "Too many headers" in text:
            status = 431
            text = _("request line or headers too large (at most {headers} headers of {size} bytes each): {detail}",
                     headers=MAX_HEADERS, size=MAX_FIELD_BYTES, detail=text)
        resp = error(status, _("malformed HTTP request: {detail}", detail=text))
        resp.force_close()
        log_rejection(request, resp)
        return resp


class _HttpServer(web.Server):
    """aiohttp's server, making :class:`_Connection` protocols."""

    header_timeout: float = 10.0

    def __call__(self) -> RequestHandler:
        return _Connection(self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs)


class _Runner(web.AppRunner):
    """An ``AppRunner`` whose server takes the ingest fast path first (:class:`IngestFirst`) and
    bounds request heads (:class:`_Connection`)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.request_handler = IngestFirst(self.app[SERVICE], server.request_handler)
        server.__class__ = _HttpServer  # the same server, only making our connections
        server.header_timeout = self.app[SERVICE].config.main.server.header_timeout_s  # type: ignore[attr-defined]
        return server


# -- running ------------------------------------------------------------------------------------------


class Server:
    """A started service plus its HTTP site; used by ``serve`` and by tests in-process."""

    def __init__(self, service: Service, runner: web.AppRunner, host: str, port: int) -> None:
        self.service = service
        self.runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    async def start(cls, config: Config, *, host: str | None = None, port: int | None = None,
                    simulate: bool = False, store_path: str | None = None) -> Server:
        if config.main.storage.backend == "redis":
            from router.service.redis.service import RedisService

            service: Service = RedisService(config, store_path=store_path, simulate=simulate)
        else:
            service = Service(config, store_path=store_path, simulate=simulate)
        await service.start()
        runner = _Runner(make_app(service), access_log=None, shutdown_timeout=10.0, max_line_size=MAX_LINE_BYTES,
                         max_field_size=MAX_FIELD_BYTES, max_headers=MAX_HEADERS)
        await runner.setup()
        host = host or config.main.server.host
        runner.app[LISTEN]["host"] = host
        site = web.TCPSite(runner, host, config.main.server.port if port is None else port, backlog=1024)
        await site.start()
        addr = runner.addresses[0]
        return cls(service, runner, host, addr[1])

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, drain the router, close the store."""
        await self.runner.cleanup()
        await self.service.stop()


def ensure_demo(config: Config, store_path: str | None = None) -> list[str]:
    """For ``--simulate``: demo secrets for shops whose secret variable is unset, and demo
    accounts when the store has none. Returns lines to print."""
    from router.storage.store import Store

    lines = []
    for shop in config.shops.values():
        if shop.secret_env and not os.environ.get(shop.secret_env):
            os.environ[shop.secret_env] = DEMO_SECRET
            lines.append("  " + i18n.gettext("{shop}: {env} unset, using the demo secret {secret!r}", shop=shop.id,
                                                  env=shop.secret_env, secret=DEMO_SECRET))
    store = Store(store_path or config.main.storage.path)
    try:
        if not store.run_sync(acct.list_accounts):
            def create(conn: Any) -> None:
                acct.add(conn, "demo", DEMO_PASSWORD, "admin", ("*",))
                acct.add(conn, "demo:lead", DEMO_PASSWORD, "supervisor", ("*",))
                for aid in config.agents:
                    acct.add(conn, f"demo:{aid}", DEMO_PASSWORD, "agent", None, aid, agent_shops(config, aid))
            store.run_sync(create)
            lines.append("  " + i18n.gettext("created demo accounts: demo (admin), demo:lead (supervisor), demo:<agent id> "
                                                  "(agents); password {password!r}", password=DEMO_PASSWORD))
    finally:
        store.close_sync()
    return lines


async def serve_forever(config: Config, host: str | None, port: int | None, simulate: bool,
                        sim_options: dict[str, Any] | None = None) -> int:
    server = await Server.start(config, host=host, port=port, simulate=simulate)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(server.service.reloader.reload("SIGHUP")))
    gettext = i18n.gettext  # the operator's banner: --lang, FENLIU_LANG or server.lang
    print(gettext("fenliu: listening on {url}", url=server.url), flush=True)
    print(gettext("  ingest   POST {url}/v1/shops/<shop_id>/messages  (X-Fenliu-Signature: sha256=<hmac>)", url=server.url))
    print(gettext("  health   GET  {url}/healthz     metrics GET {url}/metrics", url=server.url))
    print(gettext("  login    POST {url}/v1/auth/login  then GET {url}/v1/conversations, /v1/agents, /v1/stats", url=server.url))
    print(gettext("  agents   WS   {ws}/v1/agents/ws  (Authorization header, or ?ticket= from POST /v1/auth/ws-ticket)",
                  ws=server.url.replace("http", "ws")))
    print(gettext("  store    {path}", path=server.service.store.path), flush=True)
    sim = None
    if simulate:
        from adapters.simulator import Simulation

        sim = Simulation(server.service, server.url, **(sim_options or {}))
        sim.start()
        print(gettext("  simulator: {what}  (demo login: demo / {password})", what=sim.describe(), password=DEMO_PASSWORD),
              flush=True)
    await stop.wait()
    print(gettext("fenliu: shutting down (draining)"), file=sys.stderr, flush=True)
    if sim is not None:
        await sim.stop()
    await server.stop()
    return 0
