"""A shop's bridge on loopback and the way through the service to it: what the adapter tests
share (tests/adapters/test_adapters.py, test_delivery.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
from aiohttp import web

from router.core.signing import SIGNATURE_HEADER, check_signature
from tests.router.serve_support import SECRET_A, Agent, Client, NoWechat, add_accounts, db_rows, message, start_server, write_config


class Bridge:
    """An agency's bridge on loopback: keeps each reply once, can stall its first answer past
    the sender's timeout, and answers the lookup unless told it has none."""

    def __init__(self, *, lookup: bool = True) -> None:
        self.posts: list[tuple[dict, dict[str, str]]] = []
        self.bodies: list[bytes] = []  # each post's body as sent
        self.lookups: list[str] = []
        self.held: set[int] = set()
        self.lookup = lookup
        self.stall_first = False
        self.statuses: list[int] = []  # the first answers' statuses (a refusal keeps nothing)
        self.url = ""

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.read()
        assert check_signature(SECRET_A.encode(), body, request.headers.get(SIGNATURE_HEADER)) is None
        reply = json.loads(body)
        self.bodies.append(body)
        self.posts.append((reply, dict(request.headers)))
        if self.statuses:
            return web.json_response({"ok": False}, status=self.statuses.pop(0))
        self.held.add(reply["reply_id"])
        if self.stall_first and len(self.posts) == 1:
            await asyncio.sleep(2)  # kept, but the answer comes after the sender gave up
        return web.json_response({"ok": True})

    async def _get(self, request: web.Request) -> web.Response:
        query = request.query_string
        assert check_signature(SECRET_A.encode(), query.encode(), request.headers.get(SIGNATURE_HEADER)) is None
        self.lookups.append(query)
        if not self.lookup:
            raise web.HTTPMethodNotAllowed("GET", ["POST"])
        return web.json_response({"delivered": int(request.query["reply_id"]) in self.held})

    async def __aenter__(self) -> Bridge:
        app = web.Application()
        app.router.add_post("/cb", self._post)
        app.router.add_get("/cb", self._get)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/cb"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def bridge_config(tmp_path: Path, url: str) -> Path:
    cfg = write_config(tmp_path)
    shops = (cfg / "shops.toml").read_text().replace('secret_env = "FENLIU_TEST_SECRET_A"',
                                                     f'secret_env = "FENLIU_TEST_SECRET_A"\ncallback_url = "{url}"')
    (cfg / "shops.toml").write_text(shops)
    add_accounts(tmp_path / "fenliu.db")
    return cfg


async def reply_through(srv, text: str) -> None:
    async with aiohttp.ClientSession() as http:
        c = Client(srv.url, http)
        agent = await Agent.connect(c, await c.login("acme:a01"))
        await agent.next("hello")
        await c.post_messages("pdd-a", message("m-1", "b-1"))
        await agent.next("assigned")
        assert (await agent.request({"type": "accept", "conversation_id": "pdd-a:b-1"}))["ok"]
        assert (await agent.request({"type": "reply", "conversation_id": "pdd-a:b-1", "text": text}))["ok"]
        await agent.close()


async def acked(db: Path, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not db_rows(db, "SELECT acked FROM outbox WHERE acked IS NOT NULL"):
            await asyncio.sleep(0.05)


async def answer_once(tmp_path: Path, bridge: Bridge) -> None:
    """An agent answers a buyer through a service whose shop calls ``bridge`` back; returns
    once the outbox has the reply acknowledged."""
    srv = await start_server(bridge_config(tmp_path, bridge.url), NoWechat())
    try:
        await reply_through(srv, "有的亲")
        await acked(tmp_path / "fenliu.db")
    finally:
        await srv.stop()
