"""Conversations end after a silence (router/service/lifecycle.py): the agent sees them close and its
capacity is free; a buyer still owed an answer is never closed."""

from __future__ import annotations

import time

import aiohttp
import pytest

from router.service.lifecycle import IdleCloser
from tests.router.serve_support import (
    ENV,
    Agent,
    Client,
    add_accounts,
    message,
    start_server,
    write_config,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def served(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = write_config(tmp_path)
    policy = cfg / "policies" / "default.toml"
    policy.write_text(policy.read_text() + "idle_close_s = 120\nbot_idle_close_s = 60\n", encoding="utf-8")
    add_accounts(tmp_path / "fenliu.db")
    server = await start_server(cfg)
    async with aiohttp.ClientSession() as http:
        try:
            yield server, Client(server.url, http)
        finally:
            await server.stop()


async def test_an_answered_conversation_closes_after_the_buyers_silence(served):
    server, c = served
    agent = await Agent.connect(c, await c.login("acme:b01"))
    await agent.next("hello")
    await c.post_messages("tb-b", message("m-1", "b-1", shop="tb-b"))
    await c.post_messages("tb-b", message("m-2", "b-2", shop="tb-b"))
    for _ in range(2):
        assigned = await agent.next("assigned")
        assert (await agent.request({"type": "accept", "conversation_id": assigned["conversation_id"]}))["ok"]
    r = await agent.request({"type": "reply", "conversation_id": "tb-b:b-1", "text": "您好，有货的"})
    assert r["ok"], r
    closer = IdleCloser(server.service)
    now = time.time()
    assert closer.due(now + 60) == []  # not yet
    # b-2 was never answered: the buyer is owed a reply and stays open however long it takes
    assert await closer.sweep(now + 121) == ["tb-b:b-1"]
    await agent.next("closed", conversation_id="tb-b:b-1")
    assert "tb-b:b-1" not in server.service.router.dispatcher.conversations
    assert server.service.router.dispatcher.agents["b-01"].load == 1
    # the buyer writing again after an answer keeps the conversation open
    await c.post_messages("tb-b", message("m-3", "b-2", shop="tb-b"))
    r = await agent.request({"type": "reply", "conversation_id": "tb-b:b-2", "text": "在的"})
    assert r["ok"]
    await c.post_messages("tb-b", message("m-4", "b-2", shop="tb-b", text="那我拍了"))
    await agent.next("message", msg_id="m-4")
    assert await closer.sweep(time.time() + 10_000) == []
    await agent.close()


async def test_a_waiting_buyer_is_never_closed(served):
    server, c = served
    await c.post_messages("pdd-a", message("m-1", "b-9"))  # no agent online: queued
    conv = server.service.router.dispatcher.conversations["pdd-a:b-9"]
    assert conv.state == "queued"
    assert IdleCloser(server.service).due(time.time() + 10 ** 6) == []


async def test_auto_closes_are_journaled(served):
    server, c = served
    agent = await Agent.connect(c, await c.login("acme:b01"))
    await agent.next("hello")
    await c.post_messages("tb-b", message("m-1", "b-1", shop="tb-b"))
    assigned = await agent.next("assigned")
    await agent.request({"type": "accept", "conversation_id": assigned["conversation_id"]})
    await agent.request({"type": "reply", "conversation_id": "tb-b:b-1", "text": "好的"})
    assert await IdleCloser(server.service).sweep(time.time() + 121) == ["tb-b:b-1"]
    await agent.close()
    rows = server.service.store.conn.execute("SELECT body FROM journal WHERE kind = 'event'").fetchall()
    assert any(b'"type":"close"' in bytes(r[0]) and b"tb-b:b-1" in bytes(r[0]) for r in rows)


async def test_a_conversation_the_bot_settled_closes_after_its_own_timeout(tmp_path, monkeypatch, demo_config):
    from router.core.config import load_config
    from router.service.server import DEMO_SECRET, Server
    from router.core.signing import sign

    config = load_config(demo_config)
    for shop in config.shops.values():
        monkeypatch.setenv(shop.secret_env, DEMO_SECRET)
    server = await Server.start(config, port=0, store_path=str(tmp_path / "demo.db"))
    try:
        async with aiohttp.ClientSession() as http:
            body = '{"shop_id":"pdd-1001","msg_id":"m-1","buyer_id":"b-1","text":"发什么快递"}'.encode()
            async with http.post(f"{server.url}/v1/shops/pdd-1001/messages", data=body,
                                 headers={"X-Fenliu-Signature": sign(DEMO_SECRET.encode(), body)}) as r:
                assert r.status == 202, await r.text()
        conv = server.service.router.dispatcher.conversations["pdd-1001:b-1"]
        if conv.state != "bot":
            pytest.skip(f"the demo bot hands this question to a human here ({conv.state}); nothing to close")
        limit = config.policy_for("pdd-1001").dispatch.bot_idle_close_s
        closer = IdleCloser(server.service)
        assert closer.due(time.time() + limit - 5) == []
        assert await closer.sweep(time.time() + limit + 1) == ["pdd-1001:b-1"]
        assert "pdd-1001:b-1" not in server.service.router.dispatcher.conversations
    finally:
        await server.stop()
