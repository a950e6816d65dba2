"""The HTTP plumbing every handler module shares: the app keys for the service and the open
sockets, JSON answers, the JSON error bodies and the middleware that turns every failure into
one, and reading a body within the size limit. It imports no handler module, so the handler
modules (router/service/*_api.py, workbench, openapi) and the assembly in
router/service/server.py all import it and never each other.

Every refusal is a JSON body ``{"error": "<code>", "message": "<reason>"}``: ``error`` is a
stable machine code (:data:`CODES` by status unless a handler names a finer one), ``message`` a
reason a person can act on; never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog
from aiohttp import web
from aiohttp.hdrs import CONTENT_ENCODING
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from router.core import i18n
from router.core.errors import HTTPError
from router.core.i18n import _, t
from router.core.ingest import TOO_DEEP
from router.service.errors import Overloaded

log = structlog.get_logger("fenliu.server")

SERVICE = web.AppKey("service", object)
SOCKETS = web.AppKey("sockets", set)

encode = msgspec.json.Encoder(enc_hook=i18n.enc_hook).encode  # a Text left in a body: the asker's language


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=encode(data), status=status, content_type="application/json", headers=headers)


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


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def json_errors(request: web.BaseRequest, handler: Callable[..., Awaitable[web.StreamResponse]],
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
    return await json_errors(request, handler)


async def read_body(request: web.BaseRequest, limit: int) -> bytes | web.Response:
    """The body, or a 413 refusal when it is (or, decoded, grows) over ``limit`` bytes."""
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

