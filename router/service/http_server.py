"""The HTTP server under the app, below aiohttp's defaults: the ingest fast path
(:class:`IngestFirst`), a deadline for request heads and the parser's refusals as JSON
(:class:`_Connection`), and the runner that puts them together (:class:`Runner`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.hdrs import EXPECT
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from router.core.i18n import _
from router.service.http import CODES, SERVICE, encode, error, error_body, json_errors, log_rejection
from router.service.ingest_api import ingest_shop
from router.service.service import Service

log = structlog.get_logger("fenliu.server")

_SHOPS, _MESSAGES = "/v1/shops/", "/messages"


class IngestFirst:
    """The HTTP server's request handler: ``POST /v1/shops/{shop_id}/messages``, the one route
    under sale-day load, is matched with two string tests and handled directly; everything else
    goes to ``fallback``, the app's own handler (its router, its middleware). Skipping the
    router, the match info and two middleware layers saves ≈ 5 % of the event loop's time per
    message (docs/service.md). Errors become the same JSON bodies either way
    (:func:`~router.service.http.json_errors`); a request with ``Expect`` takes the app's path, which answers it."""

    def __init__(self, service: Service, fallback: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]) -> None:
        self.service = service
        self.fallback = fallback

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if (request.method == "POST" and path.startswith(_SHOPS) and path.endswith(_MESSAGES)
                and EXPECT not in request.headers):
            shop_id = path[len(_SHOPS):-len(_MESSAGES)]
            if shop_id and "/" not in shop_id:
                return await json_errors(request, ingest_shop, self.service, shop_id)
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
        body = encode(error_body(408, reason))
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


class Runner(web.AppRunner):
    """An ``AppRunner`` whose server takes the ingest fast path first (:class:`IngestFirst`) and
    bounds request heads (:class:`_Connection`)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.request_handler = IngestFirst(self.app[SERVICE], server.request_handler)
        server.__class__ = _HttpServer  # the same server, only making our connections
        server.header_timeout = self.app[SERVICE].config.main.server.header_timeout_s  # type: ignore[attr-defined]
        return server
