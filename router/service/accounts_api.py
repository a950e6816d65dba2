"""Logging in: ``POST /v1/auth/login`` (a bearer token, the password checked by
:class:`router.service.login.LoginGuard`, which counts failures and locks out guessers) and
``POST /v1/auth/ws-ticket`` (a single-use ticket, since a browser's WebSocket cannot send the token).
"""

from __future__ import annotations

import msgspec
import structlog
from aiohttp import web

from router.core.i18n import _
from router.core.ingest import explain
from router.service.access import EXPIRES, TICKETS, Scope, agent_of, gate, public
from router.service.api_types import LoginRequest, TicketResponse
from router.service.http import SERVICE, error, json_response
from router.service.login import LoginGuard, LoginRefused
from router.storage import accounts as acct

log = structlog.get_logger("fenliu.server")


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


@gate()
async def ws_ticket(request: web.Request, scope: Scope) -> web.Response:
    """A single-use ticket that opens a WebSocket (``?ticket=``) within a few seconds: a browser
    cannot set the ``Authorization`` header on a WebSocket, and a token in a URL ends up in logs."""
    ticket, expires = request.app[TICKETS].issue(scope.account, request[EXPIRES])
    return json_response(TicketResponse(ticket, expires))
