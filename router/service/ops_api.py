"""The operators' endpoints: ``GET /healthz``, ``GET /metrics`` (Prometheus, behind a token
beyond loopback), ``GET /v1/stats`` (live counts and a period's figures) and
``POST /v1/admin/reload``.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import time
from typing import Any

import msgspec
from aiohttp import web

from router.core.errors import HTTPError
from router.core.i18n import _, t
from router.core.ingest import explain
from router.service.access import Scope, gate, public
from router.service.api_types import ReloadRequest
from router.service.http import SERVICE, error, json_response
from router.storage.stats import parse_period

#: The host the server listens on (``{"host": …}``): ``/metrics`` asks for a token beyond loopback.
LISTEN = web.AppKey("listen", dict)
DEFAULT_METRICS_TOKEN_ENV = "FENLIU_METRICS_TOKEN"


def _is_loopback(host: str | None) -> bool:
    if not host or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
