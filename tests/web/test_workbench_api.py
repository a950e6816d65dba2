"""The endpoints the workbench and the dashboard add (router/service/workbench.py), and the rule behind
both pages: nothing trusts the client. An agent crafting requests by hand, over HTTP or the
WebSocket, cannot act on another shop's conversation or on a colleague's."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest

from tests.router.serve_support import ENV, Agent, Client, add_accounts, start_server
from tests.web.support import message, write_config

pytestmark = pytest.mark.anyio
REMOTE = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|from\s+["'](?:https?:)?//|import\(\s*["'](?:https?:)?//|url\(\s*["']?(?:https?:)?//""")


@pytest.fixture
async def server(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = write_config(tmp_path)
    add_accounts(tmp_path / "fenliu.db")
    srv = await start_server(cfg)
    client = Client(srv.url, aiohttp.ClientSession())
    try:
        yield srv, client
    finally:
        await client.http.close()
        await srv.stop()


async def _assigned(c: Client, account: str, msg: dict) -> tuple[Agent, dict]:
    """Connect ``account``'s agent, post ``msg`` and wait for its assignment."""
    agent = await Agent.connect(c, await c.login(account))
    await agent.next("hello")
    status, body = await c.post_messages(msg["shop_id"], msg)
    assert status == 202, body
    frame = await agent.next("assigned", conversation_id=f"{msg['shop_id']}:{msg['buyer_id']}")
    return agent, frame


async def _wait(check, timeout: float = 10.0):
    async with asyncio.timeout(timeout):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.1)


async def test_pages_are_served_as_static_files(server):
    _srv, c = server
    async with c.http.get(f"{c.url}/", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/web/"
    for name, kind in (("", "text/html"), ("workbench.html", "text/html"), ("dashboard.html", "text/html"),
                       ("workbench.js", "text/javascript"), ("dashboard.js", "text/javascript"),
                       ("common.js", "text/javascript"), ("charts.js", "text/javascript"), ("style.css", "text/css")):
        async with c.http.get(f"{c.url}/web/{name}") as r:
            assert r.status == 200, name
            assert r.headers["Content-Type"].startswith(kind), name
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            body = await r.text()
            assert not REMOTE.search(body), f"{name} must not load anything remote"
    for bad in ("nope.js", "..%2Fserver.py", "%2E%2E%2Fworkbench.py", "Index.HTML"):
        async with c.http.get(f"{c.url}/web/{bad}") as r:
            assert r.status == 404, bad


async def test_me_names_the_account_its_shops_and_agent(server):
    _srv, c = server
    status, _ = await c.call("GET", "/v1/me")
    assert status == 401
    status, me = await c.call("GET", "/v1/me", await c.login("acme:a01"))
    assert status == 200
    assert me["role"] == "agent" and me["agent_id"] == "a-01" and me["agent"]["name"] == "小美"
    assert me["shops"] == [{"id": "pdd-a", "name": "暖冬羽绒旗舰店", "platform": "pinduoduo"}]
    assert set(me["skills"]) == {"presale", "logistics", "aftersale"}
    status, me = await c.call("GET", "/v1/me", await c.login("acme:b01"))
    assert me["agent_id"] == "b-01" and [s["id"] for s in me["shops"]] == ["tb-b"]


async def test_quick_replies_are_grouped_and_filled_from_the_conversation(server):
    _srv, c = server
    msg = message("m-1", "b-7", "我的快递到哪了", buyer={"nick": "小王"},
                  order={"order_id": "240101-88", "status": "shipped", "goods": "羽绒服"})
    agent, _ = await _assigned(c, "acme:a01", msg)
    token = await c.login("acme:a01")
    status, body = await c.call("GET", "/v1/quick-replies?conversation_id=pdd-a:b-7&q=帮我查下物流", token)
    assert status == 200, body
    groups = {g["group"]: {i["id"]: i for i in g["items"]} for g in body["groups"]}
    assert set(groups) == {"common", "shipping"}
    assert groups["shipping"]["q-track"]["text"] == "小王，已帮您查询订单240101-88的物流，预计明天送达~"
    assert groups["common"]["q-hello"]["text"] == "小王您好，我是暖冬羽绒旗舰店的客服，很高兴为您服务~"
    assert groups["shipping"]["q-track"]["template"].startswith("{buyer}")
    assert body["suggested"] == ["q-track"]
    status, body = await c.call("GET", "/v1/quick-replies?conversation_id=tb-b:b-7", token)
    assert status == 403
    await agent.close()


async def test_reply_check_returns_the_forbidden_words_with_positions(server):
    _srv, c = server
    token = await c.login("acme:a01")
    status, body = await c.call("POST", "/v1/replies/check", token, json={"shop_id": "pdd-a", "text": "亲，加我微 信，给你最好的价"})
    assert status == 200
    assert body["ok"] is False
    words = {(h["word"], h["start"], h["end"]) for h in body["hits"]}
    assert ("微信", 4, 7) in words and ("最好", 10, 12) in words
    assert "微信" in body["reason"]
    status, body = await c.call("POST", "/v1/replies/check", token, json={"shop_id": "pdd-a", "text": "亲，今天就发货哦"})
    assert (status, body["ok"], body["hits"]) == (200, True, [])
    status, body = await c.call("POST", "/v1/replies/check", token, json={"shop_id": "tb-b", "text": "你好"})
    assert status == 403
    status, body = await c.call("POST", "/v1/replies/check", token, json={"conversation_id": "tb-b:b-1", "text": "你好"})
    assert status == 403
    status, body = await c.call("POST", "/v1/replies/check", token, json={"text": "你好"})
    assert status == 400


async def test_an_agent_cannot_act_on_another_shops_or_a_colleagues_conversation(server):
    """Crafted requests, as the page would never send them: every one refused by the server."""
    srv, c = server
    b01, _ = await _assigned(c, "acme:b01", message("t-1", "b-9", "在吗", shop="tb-b"))
    a02, _ = await _assigned(c, "acme:a02", message("p-1", "b-5", "在吗"))
    a01 = await Agent.connect(c, await c.login("acme:a01"))
    await a01.next("hello")
    token = await c.login("acme:a01")

    for frame in ({"type": "accept", "conversation_id": "tb-b:b-9"},
                  {"type": "reply", "conversation_id": "tb-b:b-9", "text": "你好"},
                  {"type": "transfer", "conversation_id": "tb-b:b-9", "to_agent": "a-01"},
                  {"type": "close", "conversation_id": "tb-b:b-9"},
                  {"type": "note", "conversation_id": "tb-b:b-9", "text": "x", "tags": ["vip"]}):
        result = await a01.request(frame)
        assert result["ok"] is False and "forbidden" in result["reason"], frame
    for frame in ({"type": "accept", "conversation_id": "pdd-a:b-5"},
                  {"type": "reply", "conversation_id": "pdd-a:b-5", "text": "你好"},
                  {"type": "transfer", "conversation_id": "pdd-a:b-5", "to_agent": "a-01"},
                  {"type": "close", "conversation_id": "pdd-a:b-5"},
                  {"type": "note", "conversation_id": "pdd-a:b-5", "text": "x"}):
        result = await a01.request(frame)
        assert result["ok"] is False, frame

    assert (await c.call("GET", "/v1/conversations/tb-b:b-9", token))[0] == 403
    assert (await c.call("POST", "/v1/conversations/tb-b:b-9/transfer", token, json={"to_agent": "a-01"}))[0] == 403
    assert (await c.call("POST", "/v1/conversations/pdd-a:b-5/transfer", token, json={"to_agent": "a-01"}))[0] == 403
    assert (await c.call("PUT", "/v1/shops/tb-b/buyers/b-9", token, json={"add_tags": ["vip"]}))[0] == 403
    assert (await c.call("PUT", "/v1/shops/pdd-a/buyers/b-5", token, json={"tags": []}))[0] == 403
    assert (await c.call("PUT", "/v1/agents/a-02/status", token, json={"status": "offline"}))[0] == 403
    assert (await c.call("GET", "/v1/dashboard", token))[0] == 403
    async with c.http.get(f"{c.url}/v1/supervisors/ws", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 403
    lead = await c.login("acme:lead-a")
    assert (await c.call("POST", "/v1/conversations/tb-b:b-9/transfer", lead, json={"to_agent": "b-01"}))[0] == 403

    d = srv.service.router.dispatcher
    assert d.conversations["tb-b:b-9"].agent_id == "b-01" and d.conversations["pdd-a:b-5"].agent_id == "a-02"
    assert srv.service.profiles.get(("tb-b", "b-9")) is None
    for agent in (a01, a02, b01):
        await agent.close()


async def test_a_forbidden_reply_is_refused_by_the_server_even_without_the_precheck(server):
    srv, c = server
    agent, frame = await _assigned(c, "acme:a01", message("m-1", "b-3", "在吗"))
    cid = frame["conversation_id"]
    assert (await agent.request({"type": "accept", "conversation_id": cid}))["ok"]
    result = await agent.request({"type": "reply", "conversation_id": cid, "text": "加我VX吧"})
    assert result["ok"] is False
    assert [(h["word"], h["start"], h["end"]) for h in result["hits"]] == [("VX", 2, 4)]
    assert srv.service.outbox_pending() == 0
    await agent.close()


async def test_supervisor_moves_a_conversation_and_agents_are_told(server):
    _srv, c = server
    a01, frame = await _assigned(c, "acme:a01", message("m-1", "b-4", "在吗"))
    cid = frame["conversation_id"]
    lead = await c.login("acme:lead-a")
    status, body = await c.call("POST", f"/v1/conversations/{cid}/transfer", lead, json={"to_agent": "a-02"})
    assert status == 409 and "not online" in body["message"]
    a02 = await Agent.connect(c, await c.login("acme:a02"))
    await a02.next("hello")
    status, body = await c.call("POST", f"/v1/conversations/{cid}/transfer", lead, json={"to_agent": "a-02", "to_skill": "presale"})
    assert status == 400
    status, body = await c.call("POST", f"/v1/conversations/{cid}/transfer", lead, json={"to_agent": "a-02"})
    assert status == 200, body
    assert body["moved"][0]["agent_id"] == "a-02" and body["moved"][0]["cause"] == "transfer"
    assert (await a01.next("transferred", conversation_id=cid))["to_agent"] == "a-02"
    assert (await a02.next("assigned", conversation_id=cid))["cause"] == "transfer"
    token = await c.login("acme:a02")
    status, body = await c.call("POST", f"/v1/conversations/{cid}/transfer", token, json={"to_skill": "presale"})
    assert status == 200, body
    await a01.close()
    await a02.close()


async def test_a_buyer_marked_vip_is_prioritised_from_the_next_message(server):
    _srv, c = server
    agent, frame = await _assigned(c, "acme:a01", message("m-1", "b-8", "在吗"))
    cid = frame["conversation_id"]
    token = await c.login("acme:a01")
    status, conv = await c.call("GET", f"/v1/conversations/{cid}", token)
    assert conv["priority"] == 0
    status, body = await c.call("PUT", "/v1/shops/pdd-a/buyers/b-8", token, json={"add_tags": ["vip"]})
    assert status == 200 and body["tags"] == ["vip"]
    await c.post_messages("pdd-a", message("m-2", "b-8", "还在吗"))
    await agent.next("message", conversation_id=cid)
    status, conv = await c.call("GET", f"/v1/conversations/{cid}", token)
    assert conv["priority"] == 20
    await agent.close()


async def test_today_dashboard_and_the_supervisors_feed(server):
    _srv, c = server
    lead = await c.login("acme:lead-a")
    async with c.http.ws_connect(f"{c.url.replace('http', 'ws')}/v1/supervisors/ws", headers={"Authorization": f"Bearer {lead}"}) as feed:
        await c.post_messages("pdd-a", message("q-1", "b-1", "在吗"))
        await c.post_messages("tb-b", message("q-2", "b-2", "在吗", shop="tb-b"))
        status, dash = await c.call("GET", "/v1/dashboard", lead)
        assert status == 200
        assert [(q["skill"], q["depth"]) for q in dash["queues"]] == [("presale", 1)]
        assert dash["queues"][0]["shops"] == {"pdd-a": 1} and dash["queues"][0]["oldest_wait_s"] >= 0
        assert {a["id"] for a in dash["agents"]} == {"a-01", "a-02"}
        assert [x["conversation_id"] for x in dash["decisions"]] == ["pdd-a:b-1"]
        seen: list[dict] = []
        async with asyncio.timeout(10):
            while not any(f.get("type") == "dashboard" for f in seen) or not any(f.get("type") == "decision" for f in seen):
                seen.append(json.loads((await feed.receive()).data))
        decisions = [f for f in seen if f["type"] == "decision"]
        assert [d["conversation_id"] for d in decisions] == ["pdd-a:b-1"]

        agent = await Agent.connect(c, await c.login("acme:a01"))
        frame = await agent.next("assigned", conversation_id="pdd-a:b-1")
        assert frame["cause"] == "queue_drain"
        assert (await agent.request({"type": "accept", "conversation_id": "pdd-a:b-1"}))["ok"]
        assert (await agent.request({"type": "reply", "conversation_id": "pdd-a:b-1", "text": "亲，在的"}))["ok"]
        async with asyncio.timeout(10):
            while True:
                f = json.loads((await feed.receive()).data)
                if f["type"] == "decision" and f["cause"] == "queue_drain":
                    assert f["agent_id"] == "a-01"
                    break

    async def replied():
        _, body = await c.call("GET", "/v1/today", lead)
        return body if body["replies"] == 1 else None

    today = await _wait(replied)
    assert today["answered"] == 1 and today["in_time"] == 1 and today["reply_rate"] == 1.0
    assert today["messages"] == 1 and today["agents"]["a-01"]["replies"] == 1
    assert today["conversations"] == 1 and today["agents"]["a-01"]["conversations"] == 1
    assert len(today["hours"]) == 24 and sum(h["messages"] for h in today["hours"]) == 1
    status, mine = await c.call("GET", "/v1/today", await c.login("acme:a01"))
    assert mine["agent_id"] == "a-01" and mine["replies"] == 1 and mine["status"] == "online" and "agents" not in mine
    status, theirs = await c.call("GET", "/v1/today", await c.login("acme:b01"))
    assert theirs["agent_id"] == "b-01" and theirs["replies"] == 0
    await agent.close()
