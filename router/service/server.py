"""The HTTP face of ``fenliu serve`` (aiohttp), assembled: :func:`make_app` puts the handler
modules' routes on one app, :class:`Server` starts a service with it, :func:`serve_forever` is
the ``serve`` command. Handlers only check, decode and wait; routing and storage happen in
:class:`router.service.service.Service`.

- router/service/http.py: the shared plumbing (app keys, JSON answers and error bodies);
- router/service/ingest_api.py: signed ingest, webhooks and ratings;
- router/service/accounts_api.py: login and WebSocket tickets;
- router/service/conversations_api.py: conversations, agents, buyers' profiles, the agents' WebSocket;
- router/service/ops_api.py: health, metrics, stats, reload;
- router/service/workbench.py: the pages and the workbench's own endpoints;
- router/service/openapi.py: the published contract;
- router/service/http_server.py: the server under the app (the ingest fast path, head deadlines).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from aiohttp import web

from router.core import i18n
from router.core.config import Config
from router.service import workbench
from router.service.access import BOOK, TICKETS, AccountBook, Tickets, agent_shops, check_routes
from router.service.accounts_api import LOGIN, login, ws_ticket
from router.service.conversations_api import (
    agent_status,
    agent_ws,
    agents,
    conversation,
    conversations,
    get_profile,
    put_profile,
)
from router.service.http import SERVICE, SOCKETS, errors_middleware
from router.service.http_server import MAX_FIELD_BYTES, MAX_HEADERS, MAX_LINE_BYTES, Runner
from router.service.ingest_api import ingest, rating, webhook
from router.service.login import LoginGuard
from router.service.openapi import openapi_handler
from router.service.ops_api import LISTEN, healthz, metrics, reload, stats
from router.service.service import Service
from router.storage import accounts as acct

DEMO_SECRET = "fenliu-demo-secret"
DEMO_PASSWORD = "demo1234"


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
    r.add_get("/openapi.json", openapi_handler)
    workbench.setup(app)
    check_routes(app)
    return app


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
        runner = Runner(make_app(service), access_log=None, shutdown_timeout=10.0, max_line_size=MAX_LINE_BYTES,
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
