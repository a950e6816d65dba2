"""A reply reaches the buyer once even when an attempt's outcome is unknown: a callback that
timed out after it was sent, or a reply found pending at start (the sender died before it
recorded the answer). The bridge is asked ``GET ?reply_id=N`` first; a bridge without that lookup
gets the reply again marked ``X-Fenliu-Redelivery: 1``. The PostgreSQL outbox's side of this is
in tests/pg/test_records.py and the SIGKILL test of tests/pg/test_instances.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import adapters.bridge
from adapters.bridge import REDELIVERY_HEADER
from router.core.signing import SIGNATURE_HEADER, check_signature
from tests.router.serve_support import ENV, SECRET_A, Agent, Client, NoWechat, add_accounts, db_rows, message, start_server, write_config

pytestmark = pytest.mark.anyio


class Bridge:
    """An agency's bridge on loopback: keeps each reply once, can stall its first answer past
    the sender's timeout, and answers the lookup unless told it has none."""

    def __init__(self, *, lookup: bool = True) -> None:
        self.posts: list[tuple[dict, dict[str, str]]] = []
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


def _config(tmp_path: Path, url: str) -> Path:
    cfg = write_config(tmp_path)
    shops = (cfg / "shops.toml").read_text().replace('secret_env = "FENLIU_TEST_SECRET_A"',
                                                     f'secret_env = "FENLIU_TEST_SECRET_A"\ncallback_url = "{url}"')
    (cfg / "shops.toml").write_text(shops)
    add_accounts(tmp_path / "fenliu.db")
    return cfg


@pytest.fixture
async def env(monkeypatch) -> AsyncIterator[None]:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(adapters.bridge, "TIMEOUT", aiohttp.ClientTimeout(total=0.5))
    yield


async def _reply(srv, text: str) -> None:
    async with aiohttp.ClientSession() as http:
        c = Client(srv.url, http)
        agent = await Agent.connect(c, await c.login("acme:a01"))
        await agent.next("hello")
        await c.post_messages("pdd-a", message("m-1", "b-1"))
        await agent.next("assigned")
        assert (await agent.request({"type": "accept", "conversation_id": "pdd-a:b-1"}))["ok"]
        assert (await agent.request({"type": "reply", "conversation_id": "pdd-a:b-1", "text": text}))["ok"]
        await agent.close()


async def _acked(db: Path, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not db_rows(db, "SELECT acked FROM outbox WHERE acked IS NOT NULL"):
            await asyncio.sleep(0.05)


async def _answer_once(tmp_path: Path, bridge: Bridge) -> None:
    """An agent answers a buyer through a service whose shop calls ``bridge`` back; returns
    once the outbox has the reply acknowledged."""
    srv = await start_server(_config(tmp_path, bridge.url), NoWechat())
    try:
        await _reply(srv, "有的亲")
        await _acked(tmp_path / "fenliu.db")
    finally:
        await srv.stop()


async def test_a_callback_that_timed_out_is_looked_up_not_sent_again(tmp_path, env) -> None:
    async with Bridge() as bridge:
        bridge.stall_first = True
        await _answer_once(tmp_path, bridge)
    assert len(bridge.posts) == 1 and bridge.lookups == ["reply_id=1"]
    assert db_rows(tmp_path / "fenliu.db", "SELECT attempts FROM outbox") == [(1,)]  # the timed-out attempt


async def test_a_bridge_without_the_lookup_gets_a_marked_redelivery(tmp_path, env) -> None:
    async with Bridge(lookup=False) as bridge:
        bridge.stall_first = True
        await _answer_once(tmp_path, bridge)
    (first, h1), (again, h2) = bridge.posts
    assert first == again and REDELIVERY_HEADER not in h1 and h2[REDELIVERY_HEADER] == "1"


async def test_a_failure_with_an_answer_is_sent_again_without_asking(tmp_path, env) -> None:
    """A ``500`` is the bridge saying it did not take the reply: nothing is in doubt."""
    async with Bridge() as bridge:
        bridge.statuses = [500]
        await _answer_once(tmp_path, bridge)
    assert len(bridge.posts) == 2 and bridge.lookups == []
    assert all(REDELIVERY_HEADER not in headers for _, headers in bridge.posts)


async def test_a_reply_pending_at_start_is_looked_up_first(tmp_path, env) -> None:
    """The service stopped while the callback had the reply and had not answered: at start the
    reply is in doubt, the bridge says it has it, and it is not sent again."""
    async with Bridge() as bridge:
        bridge.stall_first = True
        cfg = _config(tmp_path, bridge.url)
        srv = await start_server(cfg, NoWechat())
        try:
            await _reply(srv, "有的亲")
            async with asyncio.timeout(10):
                while not bridge.posts:
                    await asyncio.sleep(0.02)
        finally:
            await srv.stop()
        assert db_rows(tmp_path / "fenliu.db", "SELECT acked FROM outbox") == [(None,)]
        srv = await start_server(cfg, NoWechat())
        try:
            await _acked(tmp_path / "fenliu.db")
        finally:
            await srv.stop()
    assert len(bridge.posts) == 1 and bridge.lookups == ["reply_id=1"]
