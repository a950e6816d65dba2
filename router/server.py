"""The HTTP face of ``fenliu serve`` (aiohttp): ingest, webhooks, accounts, the agent
WebSocket, the workbench and ops endpoints. Handlers only check, decode and wait; routing and
storage happen in :class:`router.service.Service`.

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
from typing import Any

import msgspec
import structlog
from aiohttp import web
from aiohttp.hdrs import EXPECT

from adapters import WebhookError, adapter_class
from router import accounts as acct
from router.accounts import Account
from router.config import Config
from router.stats import compute, parse_period
from router.ingest import decode_message, explain
from router.models import AgentStatusEvent, Message, RatingEvent
from router.pipeline import InputError
from router.service import Overloaded, Service

log = structlog.get_logger("fenliu.server")

SIGNATURE_HEADER = "X-Fenliu-Signature"
DEMO_SECRET = "fenliu-demo-secret"
DEMO_PASSWORD = "demo1234"

_encode = msgspec.json.Encoder().encode

SERVICE = web.AppKey("service", Service)
SOCKETS = web.AppKey("sockets", set)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_encode(data), status=status, content_type="application/json", headers=headers)


# The stable code of a refusal that names no finer one; clients switch on ``error``, people read ``message``.
CODES: dict[int, str] = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                         405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
                         422: "invalid", 429: "too_many_requests", 431: "headers_too_large", 500: "internal",
                         503: "unavailable"}


def error_body(status: int, reason: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": code or CODES.get(status, f"http_{status}"), "message": reason, **extra}


def error(status: int, reason: str, code: str | None = None, headers: dict[str, str] | None = None,
          **extra: Any) -> web.Response:
    return json_response(error_body(status, reason, code, **extra), status, headers)


_batch = msgspec.json.Decoder(list[msgspec.Raw])


def split_batch(body: bytes) -> list[msgspec.Raw] | list[bytes]:
    """One message or a JSON array of them, as raw items (validated one by one later, so one
    bad item does not sink the others)."""
    if body.lstrip()[:1] == b"[":
        return _batch.decode(body)
    msgspec.json.decode(body)
    return [body]


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Fenliu-Signature`` value for ``body``."""
    return "sha256=" + hmac.digest(secret, body, "sha256").hex()


def check_signature(secret: bytes, body: bytes, header: str | None) -> str | None:
    """``None`` when the signature matches, else why not."""
    if not header:
        return f"missing {SIGNATURE_HEADER} header (sha256=<hex HMAC-SHA256 of the body>)"
    scheme, _, digest = header.partition("=")
    if scheme.strip().lower() != "sha256" or not digest:
        return f"{SIGNATURE_HEADER} must look like sha256=<hex>"
    expected = hmac.digest(secret, body, "sha256").hex()  # the one-shot C path: no HMAC object per request
    if not hmac.compare_digest(expected, digest.strip().lower()):
        return "signature does not match the body"
    return None


# -- authentication ------------------------------------------------------------------------------


class _Accounts:
    """Accounts cached for a few seconds, so a token check is not a store round trip; a
    generation change (new password) shows within the TTL."""

    TTL = 3.0

    def __init__(self, service: Service) -> None:
        self.service = service
        self.cache: dict[str, tuple[float, Account | None]] = {}

    async def get(self, name: str) -> Account | None:
        hit = self.cache.get(name)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.TTL:
            return hit[1]
        account = await self.service.store.call(lambda c: acct.get(c, name))
        self.cache[name] = (now, account)
        return account


ACCOUNTS = web.AppKey("accounts", _Accounts)


class HTTPError(Exception):
    """A refusal raised from anywhere under a handler; :func:`_json_errors` turns it into the
    JSON error body (``code`` defaults to the status's, :data:`CODES`)."""

    def __init__(self, status: int, reason: str, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code
        self.headers = headers


async def authenticate(request: web.Request) -> Account:
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else request.query.get("token", "")
    if not token:
        raise HTTPError(401, "missing bearer token (POST /v1/auth/login, then Authorization: Bearer <token>)")
    service = request.app[SERVICE]
    found = acct.read_token(service.token_key, token)
    if found is None:
        raise HTTPError(401, "invalid or expired token")
    account = await request.app[ACCOUNTS].get(found[0])
    if account is None or account.generation != found[1]:
        raise HTTPError(401, "token no longer valid (account removed or password changed)")
    return account


def agent_of(service: Service, account: Account) -> str | None:
    """The agent an account works as: its ``agent_id``, or the agent whose ``account`` names it."""
    if account.agent_id and account.agent_id in service.config.agents:
        return account.agent_id
    for aid, agent in service.config.agents.items():
        if agent.account == account.name:
            return aid
    return None


def require_shop(account: Account, shop_id: str) -> None:
    if not account.may_see_shop(shop_id):
        raise HTTPError(403, f"forbidden: shop {shop_id!r} is not permitted to account {account.name!r}")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _json_errors(request: web.BaseRequest, handler: Callable[..., Awaitable[web.StreamResponse]],
                       *args: Any) -> web.StreamResponse:
    """``handler(request, *args)`` with its errors as JSON bodies: ours (:class:`HTTPError`),
    aiohttp's 4xx, and anything unexpected as a 500 whose traceback goes to the log."""
    try:
        return await handler(request, *args)
    except HTTPError as exc:
        return error(exc.status, exc.reason, exc.code, exc.headers)
    except Overloaded as exc:  # the journal failed under an event, a reply or a context push
        return error(503, str(exc), headers={"Retry-After": "1"})
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return error(exc.status, exc.reason, path=request.path)
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:  # noqa: BLE001 - the caller gets a reason, the log gets the traceback
        log.exception("handler_failed", path=request.path)
        return error(500, "internal error (logged)")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await _json_errors(request, handler)


# -- ingest ----------------------------------------------------------------------------------------


async def _read_body(request: web.BaseRequest, limit: int) -> bytes | web.Response:
    length = request.content_length
    if length is not None and length > limit:
        return error(413, f"body of {length} bytes is over the limit of {limit} (server.max_body_bytes)")
    try:
        if length is not None:  # the usual case: one read of a known size, not read() to the end
            return await request.content.readexactly(length)
        return await request.read()
    except asyncio.IncompleteReadError:
        raise web.HTTPBadRequest(reason="body shorter than Content-Length") from None
    except web.HTTPRequestEntityTooLarge:
        return error(413, f"body is over the limit of {limit} bytes (server.max_body_bytes)")


async def _signed_body(request: web.Request, service: Service, shop_id: str) -> bytes | web.Response:
    """The raw body of a request a shop's bridge signed, or the refusal (404, 413, 401)."""
    shop = service.config.shops.get(shop_id)
    if shop is None:
        return error(404, f"unknown shop {shop_id!r}")
    body = await _read_body(request, service.config.main.server.max_body_bytes)
    if isinstance(body, web.Response):
        service.metrics.rejected.labels("413").inc()
        return body
    secret = shop.secret
    if secret is None:
        service.metrics.rejected.labels("401").inc()
        return error(401, f"shop {shop_id!r} has no secret configured (set the environment variable "
                          f"{shop.secret_env or '<secret_env in shops.toml>'}); unsigned ingest is refused")
    why = check_signature(secret, body, request.headers.get(SIGNATURE_HEADER))
    if why is not None:
        service.metrics.rejected.labels("401").inc()
        return error(401, why)
    return body


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
            return error(400, "empty batch: send one message or a non-empty array")
        if len(items) > server.max_batch:
            service.metrics.rejected.labels("413").inc()
            return error(413, f"batch of {len(items)} messages is over the limit of {server.max_batch} (server.max_batch)")
    good: list[Message] = []
    index: list[int] = []
    errors: list[dict[str, Any]] = []
    for i, raw in enumerate(items):
        try:
            msg = decode_message(raw)  # type: ignore[arg-type]
        except msgspec.ValidationError as exc:
            errors.append({"index": i, "reason": explain(exc)})
            continue
        except msgspec.DecodeError as exc:  # only a single message can be malformed JSON here
            service.metrics.rejected.labels("400").inc()
            return error(400, explain(exc))
        if msg.shop_id != shop_id:
            errors.append({"index": i, "msg_id": msg.msg_id,
                           "reason": f"shop_id {msg.shop_id!r} does not match the URL's shop {shop_id!r}"})
            continue
        good.append(msg)
        index.append(i)
    return await _submit(service, good, index, errors)


async def _submit(service: Service, good: list[Message], index: list[int], errors: list[dict[str, Any]],
                  ok_body: Any = None) -> web.Response:
    result = None
    if good:
        try:
            result = await service.ingest(good)
        except Overloaded as exc:
            service.metrics.rejected.labels("503").inc()
            return error(503, str(exc) or "overloaded: the ingest queue is full, retry later", "overloaded",
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
        body = {**error_body(400, f"item {first['index']}: {first['reason']}"
                             + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""), "invalid_items"),
                "errors": errors, **body,
                "accepted_ids": result.accepted if result else [],
                "duplicate_ids": result.duplicates if result else []}
        return json_response(body, 400)
    if ok_body is not None:
        return json_response(ok_body, 200)
    return json_response(body, 202)


async def webhook(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    platform = request.match_info["platform"]
    shop_id = request.match_info["shop_id"]
    shop = service.config.shops.get(shop_id)
    if shop is None:
        return error(404, f"unknown shop {shop_id!r}")
    cls = adapter_class(platform)
    if cls is None:
        return error(404, f"unknown platform adapter {platform!r}")
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
    good = [m for m in result.messages if m.shop_id == shop_id]
    return await _submit(service, good, list(range(len(good))), [], ok_body=result.response)


# -- accounts ----------------------------------------------------------------------------------------


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    account: str
    password: str


async def login(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        req = msgspec.json.decode(await request.read(), type=LoginRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return error(400, explain(exc) + ' (expected {"account": "main" or "main:sub", "password": "..."})')
    account = await service.store.call(lambda c: acct.verify(c, req.account, req.password))
    if account is None:
        log.info("login_failed", account=req.account)
        return error(401, "wrong account or password")
    token, expires = acct.issue_token(service.token_key, account, service.config.main.server.token_ttl_s)
    log.info("login", account=account.name, role=account.role)
    return json_response({"token": token, "expires": expires, "account": account.name, "role": account.role,
                          "shops": list(account.shops), "agent_id": agent_of(service, account)})


# -- workbench and ops -----------------------------------------------------------------------------


def _conv_json(service: Service, conv: Any) -> dict[str, Any]:
    return {"id": conv.id, "shop_id": conv.shop_id, "buyer_id": conv.buyer_id, "state": conv.state,
            "agent_id": conv.agent_id, "skill": conv.skill, "priority": conv.priority,
            "opened_at": conv.opened_at, "queued_at": conv.queued_at, "reserved_until": conv.reserved_until,
            "messages": conv.messages, "last_ts": conv.last_ts}


async def conversations(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    account = await authenticate(request)
    shop = request.query.get("shop_id")
    if shop is not None:
        require_shop(account, shop)
    state = request.query.get("state")
    agent = request.query.get("agent_id")
    out = []
    for conv in service.router.dispatcher.conversations.values():
        if not account.may_see_shop(conv.shop_id) or (shop and conv.shop_id != shop):
            continue
        if (state and conv.state != state) or (agent and conv.agent_id != agent):
            continue
        out.append(_conv_json(service, conv))
    out.sort(key=lambda c: (c["shop_id"], c["opened_at"]))
    return json_response({"conversations": out})


async def conversation(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    account = await authenticate(request)
    cid = request.match_info["cid"]
    require_shop(account, cid.split(":", 1)[0])
    conv = service.router.dispatcher.conversations.get(cid)
    if conv is None:
        return error(404, f"no open conversation {cid!r}")
    snap = service.snapshot(cid)
    return json_response({**_conv_json(service, conv), "history": snap.history if snap else [],
                          "buyer": snap.buyer if snap else None, "order": snap.order if snap else None})


async def agents(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    account = await authenticate(request)
    d = service.router.dispatcher
    out = []
    for aid, cfg in service.config.agents.items():
        shops = [s for s in (service.config.shops if "*" in cfg.shops else cfg.shops) if account.may_see_shop(s)]
        if not shops:
            continue
        st = d.agents.get(aid)
        out.append({"id": aid, "name": cfg.name, "skills": list(cfg.skills), "shops": shops,
                    "status": st.status if st else "offline", "in_shift": st.in_shift if st else False,
                    "load": st.load if st else 0, "max_concurrent": cfg.max_concurrent,
                    "connected": aid in service.sessions,
                    "conversations": list(st.conversations) if st else []})
    if hasattr(service, "shared_agents"):
        shared = await service.shared_agents([a["id"] for a in out])
        for a in out:
            a.update(shared.get(a["id"], {}))
    return json_response({"agents": out})


class StatusRequest(msgspec.Struct, forbid_unknown_fields=True):
    status: str


async def agent_status(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    account = await authenticate(request)
    aid = request.match_info["agent_id"]
    cfg = service.config.agents.get(aid)
    if cfg is None:
        return error(404, f"unknown agent {aid!r}")
    own = agent_of(service, account) == aid
    shops = service.config.shops if "*" in cfg.shops else cfg.shops
    if not own and not (account.is_supervisor and any(account.may_see_shop(s) for s in shops)):
        return error(403, f"forbidden: account {account.name!r} may not set the status of agent {aid!r}")
    try:
        req = msgspec.json.decode(await request.read(), type=StatusRequest)
        event = AgentStatusEvent(aid, req.status)  # type: ignore[arg-type]
        event = msgspec.convert(msgspec.to_builtins(event), AgentStatusEvent)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return error(400, explain(exc) + ' (expected {"status": "online" | "break" | "offline"})')
    try:
        moved = await service.event(event)
    except InputError as exc:
        return error(409, str(exc))
    return json_response({"agent_id": aid, "status": event.status, "moved": moved})


async def stats(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    account = await authenticate(request)
    d = service.router.dispatcher
    shops: dict[str, dict[str, Any]] = {}
    for sid in service.config.shops:
        if account.may_see_shop(sid):
            shops[sid] = {"open": 0, "queued": 0, "reserved": 0, "assigned": 0, "agents_online": d.online_count(sid)}
    for conv in d.conversations.values():
        s = shops.get(conv.shop_id)
        if s is not None:
            s["open"] += 1
            if conv.state in s:
                s[conv.state] += 1
    body: dict[str, Any] = {"shops": shops, "ingest_queue": service.pending_ingest,
                            "outbox_pending": service.outbox_pending(), "journal_seq": service._seq}
    try:
        since, until = parse_period(request.query.get("from"), request.query.get("to"),
                                    service.config.main.defaults.timezone)
    except ValueError as exc:
        return error(400, str(exc))
    shop_q = request.query.get("shop")
    if shop_q is not None:
        require_shop(account, shop_q)
    agent_q = request.query.get("agent")
    if account.role == "agent":
        agent_q = account.agent_id or agent_q
    visible = [sid for sid in service.config.shops if account.may_see_shop(sid)]
    config = service.config
    period = await service.store.call(lambda conn: compute(conn, config, since=since, until=until, shop=shop_q,
                                                           agent=agent_q, shops=visible))
    body["period"] = msgspec.to_builtins(period)
    if account.role == "admin":
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


async def get_profile(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    account = await authenticate(request)
    shop_id, buyer_id = request.match_info["shop_id"], request.match_info["buyer_id"]
    require_shop(account, shop_id)
    p = service.profiles.get((shop_id, buyer_id))
    order = service.orders.get((shop_id, buyer_id))
    return json_response({"shop_id": shop_id, "buyer_id": buyer_id, "tags": p.tags if p else [],
                          "notes": p.notes if p else [], "order": order})


async def put_profile(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    account = await authenticate(request)
    shop_id, buyer_id = request.match_info["shop_id"], request.match_info["buyer_id"]
    require_shop(account, shop_id)
    if shop_id not in service.config.shops:
        return error(404, f"unknown shop {shop_id!r}")
    try:
        req = msgspec.json.decode(await request.read(), type=ProfileRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return error(400, explain(exc))
    if req.tags is not None and account.role == "agent":
        return error(403, "forbidden: agents may add tags (add_tags) but only supervisors replace them")
    p = await service.set_profile(shop_id, buyer_id, tags=req.tags, add_tags=tuple(req.add_tags), note=req.note,
                                  author=account.name)
    return json_response({"shop_id": shop_id, "buyer_id": buyer_id, "tags": p.tags, "notes": p.notes})


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
        return error(400, explain(exc) + ' (expected {"type": "rating", "conversation_id", "score": 1-5})')
    if not event.conversation_id.startswith(f"{shop_id}:"):
        return error(400, f"conversation {event.conversation_id!r} is not of shop {shop_id!r}")
    await service.event(event)
    return json_response({"accepted": 1}, 202)


async def reload(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    account = await authenticate(request)
    if account.role != "admin":
        return error(403, "forbidden: reloading needs the admin role")
    result = await service.reloader.reload(f"admin:{account.name}")
    if not result.ok:
        return error(422, "configuration rejected; the running one is kept", "config_rejected", errors=result.errors)
    config = service.config
    return json_response({"reloaded": True, "generation": result.generation,
                          "shops": len(config.shops), "agents": len(config.agents)})


async def healthz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    ok = service.ready
    shared = service.shared_health() if hasattr(service, "shared_health") else {}
    status = "ok" if ok else "failed" if getattr(service, "failed", None) else "starting"
    return json_response({"status": status, "reason": getattr(service, "failed", None), "uptime_s": round(time.time() - service.started, 3),
                          "journal_seq": service._seq, "ingest_queue": service.pending_ingest,
                          "connected_agents": len(service.sessions), **shared}, 200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text; with ``server.metrics_token_env`` set, only for that bearer token (the
    figures name shops and agents)."""
    service = request.app[SERVICE]
    env = service.config.main.server.metrics_token_env
    if env:
        token = os.environ.get(env, "")
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not token:
            raise HTTPError(401, f"the metrics token is not set: export {env}")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPError(401, "a bearer token is required for /metrics (server.metrics_token_env)")
    body = await asyncio.get_running_loop().run_in_executor(None, service.metrics.render)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def agent_ws(request: web.Request) -> web.StreamResponse:
    from router.ws import agent_socket

    service = request.app[SERVICE]
    account = await authenticate(request)
    aid = agent_of(service, account)
    if aid is None:
        return error(403, f"account {account.name!r} is not an agent (set agent_id, or account in agents.toml)")
    if service.config.main.storage.backend == "redis":
        from router.redis.ws import agent_socket as shared_agent_socket

        return await shared_agent_socket(request, service, account, aid)  # type: ignore[arg-type]
    return await agent_socket(request, service, account, aid)


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[SOCKETS]):
        with contextlib.suppress(Exception):
            await ws.close(code=1001, message=b"server shutting down")


def make_app(service: Service) -> web.Application:
    app = web.Application(middlewares=[errors_middleware],
                          client_max_size=service.config.main.server.max_body_bytes)
    app[SERVICE] = service
    app[ACCOUNTS] = _Accounts(service)
    app[SOCKETS] = set()
    app.on_shutdown.append(_close_sockets)
    r = app.router
    r.add_post("/v1/shops/{shop_id}/messages", ingest)
    r.add_post("/v1/webhooks/{platform}/{shop_id}", webhook)
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    r.add_post("/v1/auth/login", login)
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
    from router.workbench import setup as setup_workbench
    setup_workbench(app)
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


class _Runner(web.AppRunner):
    """An ``AppRunner`` whose server takes the ingest fast path first (:class:`IngestFirst`)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.request_handler = IngestFirst(self.app[SERVICE], server.request_handler)
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
            from router.redis.service import RedisService

            service: Service = RedisService(config, store_path=store_path, simulate=simulate)
        else:
            service = Service(config, store_path=store_path, simulate=simulate)
        await service.start()
        runner = _Runner(make_app(service), access_log=None, shutdown_timeout=10.0)
        await runner.setup()
        host = host or config.main.server.host
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
    from router.store import Store

    lines = []
    for shop in config.shops.values():
        if shop.secret_env and not os.environ.get(shop.secret_env):
            os.environ[shop.secret_env] = DEMO_SECRET
            lines.append(f"  {shop.id}: {shop.secret_env} unset, using the demo secret {DEMO_SECRET!r}")
    store = Store(store_path or config.main.storage.path)
    try:
        if not store.run_sync(acct.list_accounts):
            def create(conn: Any) -> None:
                acct.add(conn, "demo", DEMO_PASSWORD, "admin", ("*",))
                acct.add(conn, "demo:lead", DEMO_PASSWORD, "supervisor", ("*",))
                for aid in config.agents:
                    acct.add(conn, f"demo:{aid}", DEMO_PASSWORD, "agent", None, aid)
            store.run_sync(create)
            lines.append(f"  created demo accounts: demo (admin), demo:lead (supervisor), demo:<agent id> (agents); "
                         f"password {DEMO_PASSWORD!r}")
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
    print(f"fenliu: listening on {server.url}", flush=True)
    print(f"  ingest   POST {server.url}/v1/shops/<shop_id>/messages  (X-Fenliu-Signature: sha256=<hmac>)")
    print(f"  health   GET  {server.url}/healthz     metrics GET {server.url}/metrics")
    print(f"  login    POST {server.url}/v1/auth/login  then GET {server.url}/v1/conversations, /v1/agents, /v1/stats")
    print(f"  agents   WS   {server.url.replace('http', 'ws')}/v1/agents/ws?token=<token>")
    print(f"  store    {server.service.store.path}", flush=True)
    sim = None
    if simulate:
        from adapters.simulator import Simulation

        sim = Simulation(server.service, server.url, **(sim_options or {}))
        sim.start()
        print(f"  simulator: {sim.describe()}  (demo login: demo / {DEMO_PASSWORD})", flush=True)
    await stop.wait()
    print("fenliu: shutting down (draining)", file=sys.stderr, flush=True)
    if sim is not None:
        await sim.stop()
    await server.stop()
    return 0
