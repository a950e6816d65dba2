"""客服质检: a refused reply's forbidden words are kept, and ``fenliu stats`` and ``/v1/stats``
count them per agent and category (the word list's tag)."""

from __future__ import annotations

import json

import aiohttp
import pytest

from router.storage import accounts as acct
from tests.router.serve_support import ENV, Agent, Client, add_accounts, message, start_server, write_config

pytestmark = pytest.mark.anyio


async def test_refused_replies_are_counted_per_agent_and_category(tmp_path, monkeypatch, fenliu):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = write_config(tmp_path)
    toml = cfg / "fenliu.toml"
    toml.write_text(toml.read_text().replace('disabled = ["bot", "sensitive"]', 'disabled = ["bot"]'))
    (cfg / "words").mkdir()
    (cfg / "words" / "contact.txt").write_text("微信 | advice=平台内沟通\nQQ\n", encoding="utf-8")
    (cfg / "words" / "ad_law.txt").write_text("最好 | advice=很好\n", encoding="utf-8")
    policy = cfg / "policies" / "default.toml"
    policy.write_text(policy.read_text() + """
[sensitive]
lists = [{ name = "contact", file = "words/contact.txt", inbound = "off", outbound = "block", tag = "引流" },
         { name = "ad_law", file = "words/ad_law.txt", inbound = "off", outbound = "block", tag = "广告法" }]
""", encoding="utf-8")
    add_accounts(tmp_path / "fenliu.db")
    server = await start_server(cfg)
    try:
        async with aiohttp.ClientSession() as http:
            c = Client(server.url, http)
            token = acct.issue_token(server.service.token_key,
                                     await server.service.store.call(lambda conn: acct.get(conn, "acme:b01")), 3600)[0]
            agent = await Agent.connect(c, token)
            await agent.next("hello")
            await c.post_messages("tb-b", message("m-1", "b-1", shop="tb-b"))
            cid = (await agent.next("assigned"))["conversation_id"]
            await agent.request({"type": "accept", "conversation_id": cid})
            for text in ("加我微信聊", "我们家最好，加微信", "这款最好"):
                r = await agent.request({"type": "reply", "conversation_id": cid, "text": text})
                assert not r["ok"], r
            assert (await agent.request({"type": "reply", "conversation_id": cid, "text": "亲，在的"}))["ok"]
            await agent.close()
            lead = await c.login("acme")
            status, body = await c.call("GET", "/v1/stats", lead)
            assert status == 200
            found = {(v["agent_id"], v["tag"]): v for v in body["period"]["violations"]}
            assert found[("b-01", "引流")]["hits"] == 2 and found[("b-01", "引流")]["words"] == ["微信"]
            assert found[("b-01", "广告法")]["hits"] == 2
            status, body = await c.call("GET", "/v1/stats", await c.login("acme:lead-a"))  # pdd-a only
            assert body["period"]["violations"] == []
    finally:
        await server.stop()
    r = fenliu("stats", "--config", str(cfg), "--json", "-")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["violations"]
    assert {(v["agent_id"], v["tag"], v["hits"]) for v in rows} == {("b-01", "引流", 2), ("b-01", "广告法", 2)}
    r = fenliu("stats", "--config", str(cfg))
    assert "微信" in r.stdout and "广告法" in r.stdout, r.stdout
