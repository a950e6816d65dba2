"""End-to-end tests of ``fenliu serve``: a real aiohttp server on a free loopback port, a real
SQLite file, real aiohttp clients and WebSocket agents."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import aiohttp
import anyio
import msgspec
import pytest

from router.core.hookspecs import hookimpl
from router.core.models import FilterVerdict
from router.service.http_server import IngestFirst
from router.core.signing import SIGNATURE_HEADER, sign
from tests.router.serve_support import (
    ENV,
    SECRET_A,
    Agent,
    Client,
    NoWechat,
    add_accounts,
    db_rows,
    message,
    start_server,
    write_config,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def env(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def make_server(tmp_path, env):
    """``await make_server(**config)`` → (server, client); the caller stops them."""

    async def make(**kw):
        cfg = write_config(tmp_path, **kw)
        add_accounts(tmp_path / "fenliu.db")
        server = await start_server(cfg, NoWechat())
        return server, Client(server.url, aiohttp.ClientSession())

    return make


@pytest.fixture
async def server(make_server):
    srv, client = await make_server()
    try:
        yield srv, client
    finally:
        await client.http.close()
        await srv.stop()


@pytest.fixture
async def fast_server(make_server):
    srv, client = await make_server(accept_timeout_s=0.6, grace_s=0.8)
    try:
        yield srv, client
    finally:
        await client.http.close()
        await srv.stop()


async def test_signed_ingest_is_journaled_and_idempotent(server, tmp_path):
    srv, c = server
    status, body = await c.post_messages("pdd-a", message("m-1"))
    assert (status, body) == (202, {"accepted": 1, "duplicates": 0})
    rows = db_rows(tmp_path / "fenliu.db", "SELECT shop_id, msg_id, conversation_id FROM messages")
    assert rows == [("pdd-a", "m-1", "pdd-a:b-1")]
    decided = db_rows(tmp_path / "fenliu.db", "SELECT action FROM decisions WHERE msg_id = 'm-1'")
    assert decided == [("queued",)]  # nobody is connected yet: agents start offline in serve
    status, body = await c.post_messages("pdd-a", [message("m-1"), message("m-2", "b-2")])
    assert (status, body) == (202, {"accepted": 1, "duplicates": 1})
    assert db_rows(tmp_path / "fenliu.db", "SELECT count(*) FROM decisions WHERE msg_id = 'm-1'") == [(1,)]


async def test_refusals_have_clear_bodies(server, tmp_path):
    srv, c = server
    status, body = await c.post_messages("pdd-a", message("m-1"), secret="wrong")
    assert status == 401 and "signature" in body["message"]
    async with c.http.post(f"{c.url}/v1/shops/pdd-a/messages", json=message("m-1")) as r:
        assert r.status == 401 and "X-Fenliu-Signature" in (await r.json())["message"]
    status, body = await c.post_messages("nope", message("m-1", shop="nope"))
    assert status == 404 and "nope" in body["message"]
    status, body = await c.post_messages("pdd-a", None, raw=b'{"shop_id": "pdd-a", "msg_id": ')
    assert status == 400 and "JSON" in body["message"]
    status, body = await c.post_messages("pdd-a", None, raw=b"x" * 5000)
    assert status == 413 and "max_body_bytes" in body["message"]
    status, body = await c.post_messages("pdd-a", [message(f"m-{i}", f"b-{i}") for i in range(21)])
    assert status == 413 and "max_batch" in body["message"]
    status, body = await c.post_messages("pdd-a", [])
    assert status == 400
    assert db_rows(tmp_path / "fenliu.db", "SELECT count(*) FROM messages") == [(0,)]


async def test_ingest_takes_the_fast_path_and_everything_else_the_app(server, tmp_path):
    """Signed ingest skips the app's router (IngestFirst); other requests, other methods on the
    ingest path and requests with ``Expect`` go through it, with the same JSON errors."""
    srv, c = server
    handler = srv.runner.server.request_handler
    assert isinstance(handler, IngestFirst)
    through_app: list[tuple[str, str]] = []
    fallback = handler.fallback

    async def recorded(request):
        through_app.append((request.method, request.path))
        return await fallback(request)

    handler.fallback = recorded
    assert await c.post_messages("pdd-a", message("m-1")) == (202, {"accepted": 1, "duplicates": 0})
    status, body = await c.post_messages("pdd-a", message("m-2"), secret="wrong")
    assert status == 401 and "signature" in body["message"]
    status, body = await c.post_messages("nope", message("m-3", shop="nope"))
    assert status == 404 and "nope" in body["message"]
    assert through_app == []

    async with c.http.get(f"{c.url}/v1/shops/pdd-a/messages") as r:
        assert r.status == 405 and "error" in await r.json()
    async with c.http.post(f"{c.url}/v1/shops/pdd-a/x/messages", data=b"{}") as r:
        assert r.status == 404 and (await r.json())["path"] == "/v1/shops/pdd-a/x/messages"
    status, body = await c.post_messages("pdd-a", message("m-4", "b-4"), headers={"Expect": "100-continue"})
    assert (status, body) == (202, {"accepted": 1, "duplicates": 0})
    assert through_app == [("GET", "/v1/shops/pdd-a/messages"), ("POST", "/v1/shops/pdd-a/x/messages"),
                           ("POST", "/v1/shops/pdd-a/messages")]
    assert db_rows(tmp_path / "fenliu.db", "SELECT msg_id FROM messages ORDER BY msg_id") == [("m-1",), ("m-4",)]


async def test_bad_items_are_named_and_good_ones_go_through(server, tmp_path):
    srv, c = server
    batch = [message("g-1"), {"shop_id": "pdd-a", "buyer_id": "b-9"}, message("g-2", "b-2", kind="sticker"),
             message("g-3", shop="tb-b"), message("g-4", "b-4")]
    status, body = await c.post_messages("pdd-a", batch)
    assert status == 400
    assert [(e["index"]) for e in body["errors"]] == [1, 2, 3]
    assert "msg_id" in body["errors"][0]["reason"]
    assert "kind" in body["errors"][1]["reason"]
    assert "does not match" in body["errors"][2]["reason"]
    assert body["message"].startswith("item 1:") and body["error"] == "invalid_items"
    assert body["accepted"] == 2 and body["accepted_ids"] == ["g-1", "g-4"]
    assert sorted(r[0] for r in db_rows(tmp_path / "fenliu.db", "SELECT msg_id FROM messages")) == ["g-1", "g-4"]


async def test_agent_accepts_replies_and_forbidden_reply_is_refused(server, tmp_path):
    srv, c = server
    token = await c.login("acme:a01")
    agent = await Agent.connect(c, token)
    hello = await agent.next("hello")
    assert hello["agent_id"] == "a-01" and hello["status"] == "online"

    order = {"order_id": "240101-88", "status": "shipped", "amount": 199.0, "goods": "羽绒服"}
    status, _ = await c.post_messages("pdd-a", message("m-1", "b-42", text="在吗?我的快递到哪了", order=order))
    assert status == 202
    assigned = await agent.next("assigned", conversation_id="pdd-a:b-42")
    assert assigned["state"] == "reserved" and assigned["reserved_until"]
    assert assigned["order"]["order_id"] == "240101-88"
    assert [h["text"] for h in assigned["history"]] == ["在吗?我的快递到哪了"]

    result = await agent.request({"type": "accept", "conversation_id": "pdd-a:b-42"})
    assert result["ok"], result
    await c.post_messages("pdd-a", message("m-2", "b-42", text="单号是多少"))
    follow = await agent.next("message", conversation_id="pdd-a:b-42")
    assert follow["text"] == "单号是多少"

    ok = await agent.request({"type": "reply", "conversation_id": "pdd-a:b-42", "text": "亲,已经帮您催件了"})
    assert ok["ok"] and ok["text"] == "亲,已经帮您催件了"
    refused = await agent.request({"type": "reply", "conversation_id": "pdd-a:b-42", "text": "加我微信发你优惠"})
    assert not refused["ok"]
    assert "微信" in refused["reason"] and refused["hits"][0]["word"] == "微信"
    texts = [r[0] for r in db_rows(tmp_path / "fenliu.db", "SELECT text FROM outbox")]
    assert texts == ["亲,已经帮您催件了"]

    note = await agent.request({"type": "note", "conversation_id": "pdd-a:b-42", "text": "老客户,催过两次",
                                "tags": ["急躁"]})
    assert note["ok"]
    assert db_rows(tmp_path / "fenliu.db", "SELECT text FROM notes") == [("老客户,催过两次",)]
    assert texts == [r[0] for r in db_rows(tmp_path / "fenliu.db", "SELECT text FROM outbox")]

    bad = await agent.request({"type": "dance", "conversation_id": "pdd-a:b-42"})
    assert not bad["ok"] and "unknown frame type" in bad["reason"]
    closed = await agent.request({"type": "close", "conversation_id": "pdd-a:b-42"})
    assert closed["ok"]
    await agent.next("closed", conversation_id="pdd-a:b-42")
    await agent.close()


async def test_reservation_timeout_reroutes(fast_server):
    srv, c = fast_server
    a1 = await Agent.connect(c, await c.login("acme:a01"))
    await a1.next("hello")
    a2 = await Agent.connect(c, await c.login("acme:a02"))
    await a2.next("hello")
    await c.post_messages("pdd-a", message("m-1", "b-7"))
    first = srv.service.router.dispatcher.conversations["pdd-a:b-7"].agent_id
    holder, other = (a1, a2) if first == "a-01" else (a2, a1)
    await holder.next("assigned", conversation_id="pdd-a:b-7")
    moved = await holder.next("transferred", conversation_id="pdd-a:b-7")
    assert moved["cause"] == "reservation_timeout"
    again = await other.next("assigned", conversation_id="pdd-a:b-7")
    assert again["cause"] == "reservation_timeout"
    assert srv.service.router.dispatcher.conversations["pdd-a:b-7"].agent_id != first
    await a1.close()
    await a2.close()


async def test_reconnect_within_grace_keeps_conversations_and_after_it_goes_offline(fast_server):
    srv, c = fast_server
    token = await c.login("acme:a01")
    agent = await Agent.connect(c, token)
    await agent.next("hello")
    await c.post_messages("pdd-a", message("m-1", "b-3"))
    await agent.next("assigned", conversation_id="pdd-a:b-3")
    assert (await agent.request({"type": "accept", "conversation_id": "pdd-a:b-3"}))["ok"]
    await agent.close()

    agent = await Agent.connect(c, token)
    hello = await agent.next("hello")
    assert [x["conversation_id"] for x in hello["conversations"]] == ["pdd-a:b-3"]
    await agent.close()

    admin = await c.login("acme")
    async with asyncio.timeout(10):
        while True:
            status, body = await c.call("GET", "/v1/agents", admin)
            a01 = next(a for a in body["agents"] if a["id"] == "a-01")
            if a01["status"] == "offline":
                break
            await asyncio.sleep(0.1)
    assert a01["conversations"] == []
    conv = srv.service.router.dispatcher.conversations["pdd-a:b-3"]
    assert conv.agent_id != "a-01"


async def test_permissions(server):
    srv, c = server
    await c.post_messages("pdd-a", message("m-1", "b-1"))
    b_agent = await c.login("acme:b01")
    lead_a = await c.login("acme:lead-a")
    status, body = await c.call("GET", "/v1/conversations/pdd-a:b-1", b_agent)
    assert status == 403 and "pdd-a" in body["message"]
    status, _ = await c.call("GET", "/v1/conversations?shop_id=pdd-a", b_agent)
    assert status == 403
    status, body = await c.call("GET", "/v1/conversations", b_agent)
    assert status == 200 and body["conversations"] == []
    status, body = await c.call("GET", "/v1/conversations", lead_a)
    assert [x["id"] for x in body["conversations"]] == ["pdd-a:b-1"]
    status, body = await c.call("GET", "/v1/conversations/pdd-a:b-1", lead_a)
    assert status == 200 and body["history"][0]["text"]
    status, _ = await c.call("GET", "/v1/conversations")
    assert status == 401
    status, _ = await c.call("GET", "/v1/conversations", "forged.token")
    assert status == 401
    status, _ = await c.call("PUT", "/v1/agents/a-01/status", b_agent, json={"status": "online"})
    assert status == 403
    status, body = await c.call("PUT", "/v1/agents/a-01/status", lead_a, json={"status": "break"})
    assert status == 200 and body["status"] == "break"
    status, body = await c.call("PUT", "/v1/agents/a-01/status", lead_a, json={"status": "asleep"})
    assert status == 400
    status, _ = await c.call("POST", "/v1/admin/reload", lead_a)
    assert status == 403
    status, _ = await c.call("PUT", "/v1/shops/pdd-a/buyers/b-1", b_agent, json={"add_tags": ["x"]})
    assert status == 403

    agent = await Agent.connect(c, b_agent)
    await agent.next("hello")
    r = await agent.request({"type": "reply", "conversation_id": "pdd-a:b-1", "text": "你好"})
    assert not r["ok"] and "forbidden" in r["reason"]
    r = await agent.request({"type": "close", "conversation_id": "tb-b:b-1"})
    assert not r["ok"] and "no open conversation" in r["reason"]
    await agent.close()


async def test_buyer_profile_tags_reach_the_next_message(server, tmp_path):
    srv, c = server
    lead = await c.login("acme:lead-a")
    status, body = await c.call("PUT", "/v1/shops/pdd-a/buyers/b-5", lead, json={"tags": ["svip"], "note": "大客户"})
    assert status == 200 and body["tags"] == ["svip"]
    await c.post_messages("pdd-a", message("m-1", "b-5", buyer={"nick": "小王", "tags": ["vip"]}))
    (body,) = db_rows(tmp_path / "fenliu.db", "SELECT body FROM messages WHERE msg_id = 'm-1'")[0]
    assert json.loads(body)["buyer"]["tags"] == ["vip", "svip"]
    status, body = await c.call("GET", "/v1/shops/pdd-a/buyers/b-5", lead)
    assert body["notes"][0]["text"] == "大客户"


async def test_reload_keeps_old_config_on_errors(server):
    srv, c = server
    admin = await c.login("acme")
    cfg = srv.service.config.dir
    good = (cfg / "policies" / "default.toml").read_text()
    (cfg / "policies" / "default.toml").write_text(good.replace('"round_robin"', '"roundrobin"'))
    status, body = await c.call("POST", "/v1/admin/reload", admin)
    assert status == 422 and any("dispatch.strategy" in e for e in body["errors"])
    (cfg / "policies" / "default.toml").write_text(good.replace("accept_timeout_s = 30.0", "accept_timeout_s = 40.0"))
    status, body = await c.call("POST", "/v1/admin/reload", admin)
    assert status == 200 and body["reloaded"]
    assert srv.service.config.policy_for("pdd-a").dispatch.accept_timeout_s == 40.0


async def test_metrics_can_ask_for_a_bearer_token(make_server, monkeypatch):
    srv, c = await make_server()
    try:
        text = (srv.service.config.dir / "fenliu.toml").read_text(encoding="utf-8")
        (srv.service.config.dir / "fenliu.toml").write_text(
            text.replace("[server]\n", '[server]\nmetrics_token_env = "FENLIU_METRICS_TOKEN"\n', 1), encoding="utf-8")
        assert (await srv.service.reloader.reload()).ok
        status, body = await c.call("GET", "/metrics")
        assert status == 401 and "FENLIU_METRICS_TOKEN" in body["message"]  # configured, but not exported
        monkeypatch.setenv("FENLIU_METRICS_TOKEN", "s3cret")
        assert (await c.call("GET", "/metrics"))[0] == 401
        assert (await c.call("GET", "/metrics", "wrong"))[0] == 401
        async with c.http.get(f"{c.url}/metrics", headers={"Authorization": "Bearer s3cret"}) as r:
            assert r.status == 200 and "fenliu_messages_total" in await r.text()
    finally:
        await c.http.close()
        await srv.stop()


async def test_health_metrics_and_stats(server):
    srv, c = server
    await c.post_messages("pdd-a", message("m-1"))
    async with c.http.get(f"{c.url}/healthz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    async with c.http.get(f"{c.url}/metrics") as r:
        text = await r.text()
    assert 'fenliu_messages_total{shop="pdd-a"} 1.0' in text
    assert 'fenliu_decisions_total{action="queued",cause="message"} 1.0' in text
    assert "fenliu_queue_depth" in text and "fenliu_agent_load" in text and "fenliu_reply_latency_seconds" in text
    assert 'fenliu_text_cache_hits_total{cache=' in text and 'fenliu_text_cache_misses_total{cache=' in text
    status, body = await c.call("GET", "/v1/stats", await c.login("acme"))
    assert body["shops"]["pdd-a"]["queued"] == 1 and body["invariants"] == "ok"


async def test_ingest_bound_gives_503(make_server):
    srv, c = await make_server(queue_max=2)
    try:
        async def one(i):
            return await c.post_messages("pdd-a", message(f"m-{i}", f"b-{i % 40}"))

        results = await asyncio.gather(*(one(i) for i in range(150)))
        statuses = {s for s, _ in results}
        assert statuses <= {202, 503} and 503 in statuses
        assert srv.service.pending_ingest == 0
        refused = [b for s, b in results if s == 503]
        assert "overloaded" in refused[0]["message"]
    finally:
        await c.http.close()
        await srv.stop()


async def test_bad_policy_dropped_into_a_running_server_is_reported_and_routing_unchanged(server):
    """The watcher picks the file up by itself: no admin call."""
    srv, c = server
    cfg = srv.service.config.dir
    before = srv.service.config
    good = (cfg / "policies" / "default.toml").read_text()
    (cfg / "policies" / "default.toml").write_text(good.replace('strategy = "round_robin"', 'strategy = 7'))
    with anyio.fail_after(20):
        while srv.service.reloader.failures == 0:
            await anyio.sleep(0.05)
    assert srv.service.config is before
    assert any("policies/default.toml: dispatch.strategy: expected str, got int" in e
               for e in srv.service.reloader.last.errors)
    async with c.http.get(f"{c.url}/metrics") as r:
        text = await r.text()
    assert "fenliu_config_reload_failures_total 1.0" in text
    status, _ = await c.post_messages("pdd-a", message("m-after-bad-reload"))
    assert status == 202
    assert srv.service.config.policy_for("pdd-a").dispatch.strategy == "round_robin"
    status, body = await c.call("POST", "/v1/admin/reload", await c.login("acme"))
    assert status == 422 and any("dispatch.strategy" in e for e in body["errors"])


async def test_ratings_and_period_stats_from_the_store(server):
    srv, c = server
    agent = await Agent.connect(c, await c.login("acme:a01"))
    await agent.next("hello")
    await c.post_messages("pdd-a", message("m-1", "b-7", text="这件有货吗"))
    await agent.next("assigned", conversation_id="pdd-a:b-7")
    assert (await agent.request({"type": "accept", "conversation_id": "pdd-a:b-7"}))["ok"]
    assert (await agent.request({"type": "reply", "conversation_id": "pdd-a:b-7", "text": "有的亲"}))["ok"]
    assert (await agent.request({"type": "close", "conversation_id": "pdd-a:b-7"}))["ok"]
    rating = {"type": "rating", "conversation_id": "pdd-a:b-7", "score": 4, "comment": "回复很快"}
    status, body = await c.post_messages("pdd-a", rating)
    assert status == 400, "a rating is not a message"
    raw = msgspec.json.encode(rating)
    async with c.http.post(f"{c.url}/v1/shops/pdd-a/ratings", data=raw,
                           headers={SIGNATURE_HEADER: sign(SECRET_A.encode(), raw)}) as r:
        assert r.status == 202, await r.text()
    async with c.http.post(f"{c.url}/v1/shops/pdd-a/ratings", data=raw, headers={SIGNATURE_HEADER: "sha256=00"}) as r:
        assert r.status == 401
    bad = msgspec.json.encode({**rating, "score": 9})
    async with c.http.post(f"{c.url}/v1/shops/pdd-a/ratings", data=bad,
                           headers={SIGNATURE_HEADER: sign(SECRET_A.encode(), bad)}) as r:
        assert r.status == 400 and "score" in (await r.json())["message"]
    for _ in range(100):
        status, stats = await c.call("GET", "/v1/stats", await c.login("acme"))
        if stats["period"]["total"]["ratings"]:
            break
        await anyio.sleep(0.05)
    total = stats["period"]["total"]
    assert (total["sessions"], total["replies"], total["ratings"], total["rating_avg"]) == (1, 1, 1, 4.0)
    assert total["first_response_s_avg"] is not None
    status, mine = await c.call("GET", "/v1/stats?shop=tb-b", await c.login("acme:a01"))
    assert status == 403
    status, body = await c.call("GET", "/v1/stats?from=tomorrow", await c.login("acme"))
    assert status == 400 and "from: expected" in body["message"]


async def test_a_dead_journal_writer_fails_closed_and_health_says_so(server, tmp_path):
    """Nothing may be acknowledged that is not journaled: with the writer process gone, ingest
    answers 503 and ``/healthz`` says why (an orchestrator restarts the service)."""
    srv, c = server
    assert (await c.post_messages("pdd-a", message("m-1")))[0] == 202
    proc = srv.service.journal.writer._proc
    proc.kill()
    await proc.wait()
    for _ in range(100):
        if srv.service.failed:
            break
        await asyncio.sleep(0.02)
    status, body = await c.post_messages("pdd-a", message("m-2", "b-2"))
    assert status == 503 and "journal" in body["message"]
    status, health = await c.call("GET", "/healthz")
    assert status == 503 and health["status"] == "failed" and "journal writer" in health["reason"]
    assert db_rows(tmp_path / "fenliu.db", "SELECT msg_id FROM messages") == [("m-1",)]


class BlockWechatInbound:
    """An inbound filter that blocks buyers' messages naming WeChat."""

    __name__ = "block_wechat_inbound"

    @hookimpl
    def fenliu_inbound_filter(self, message, ctx):
        return FilterVerdict("block", reason="off-platform contact") if "微信" in message.text else None


async def test_replay_ignores_plugin_time_budgets(tmp_path, env):
    """Replay races through history; a pause there must not turn a plugin's (live) block into a
    dropped result and open a conversation the live run never opened."""
    cfg = write_config(tmp_path)
    srv = await start_server(cfg, NoWechat(), BlockWechatInbound())
    c = Client(srv.url, aiohttp.ClientSession())
    try:
        assert (await c.post_messages("pdd-a", message("m-1", "b-1", text="加我微信聊")))[0] == 202
        assert (await c.post_messages("pdd-a", message("m-2", "b-2", text="在吗")))[0] == 202
        live = set(srv.service.router.dispatcher.conversations)
    finally:
        await c.http.close()
        await srv.stop()
    assert "pdd-a:b-2" in live and "pdd-a:b-1" not in live
    main = cfg / "fenliu.toml"
    text = main.read_text(encoding="utf-8")
    main.write_text(text.replace("[plugins]\n", "[plugins]\nhook_timeout_ms = 0.0001\n", 1), encoding="utf-8")
    srv = await start_server(cfg, NoWechat(), BlockWechatInbound())
    try:
        assert set(srv.service.router.dispatcher.conversations) == live
        assert srv.service.config.plugins.timeout == 0.0001 / 1000
    finally:
        await srv.stop()


class FlakyBlock:
    """An inbound filter that blocks every message, when it answers: ``overrun`` awaits a lookup
    past the time budget and is cancelled at it (a *blocking* filter's late verdict is kept, so it
    would not be lost), ``outage`` raises as if its blocklist service were down, ``None`` is
    healthy."""

    __name__ = "flaky_block"

    def __init__(self, mode: str | None) -> None:
        self.mode = mode

    @hookimpl
    async def fenliu_inbound_filter(self, message, ctx):
        if self.mode == "overrun":
            await anyio.sleep(0.05)
        elif self.mode == "outage":
            raise ConnectionError("blocklist service unreachable")
        return FilterVerdict("block", reason="blocklisted")


@pytest.mark.parametrize("mode", ["overrun", "outage"])
async def test_replay_drops_what_the_live_run_dropped(tmp_path, env, mode):
    """A filter's block lost live (it overran its budget, or it failed) let the message open a
    conversation. Replay must not apply that block now that the filter answers in time: the
    conversation agents were told about comes back, from a ``faults`` journal entry."""
    cfg = write_config(tmp_path)
    main = cfg / "fenliu.toml"
    main.write_text(main.read_text(encoding="utf-8").replace("[plugins]\n", "[plugins]\nhook_timeout_ms = 10\n", 1),
                    encoding="utf-8")
    srv = await start_server(cfg, NoWechat(), FlakyBlock(mode))
    c = Client(srv.url, aiohttp.ClientSession())
    try:
        assert (await c.post_messages("pdd-a", message("m-1", "b-1")))[0] == 202
        live = {cid: (conv.state, conv.agent_id) for cid, conv in srv.service.router.dispatcher.conversations.items()}
    finally:
        await c.http.close()
        await srv.stop()
    assert list(live) == ["pdd-a:b-1"]
    db = tmp_path / "fenliu.db"
    assert db_rows(db, "SELECT kind, msg_id, CAST(body AS TEXT) FROM journal WHERE kind = 'faults'") == [
        ("faults", "m-1", '[["fenliu_inbound_filter","flaky_block"]]')]
    flags = json.loads(db_rows(db, "SELECT body FROM decisions WHERE msg_id = 'm-1'")[0][0])["flags"]
    assert "plugin_error:flaky_block" in flags

    srv = await start_server(cfg, NoWechat(), FlakyBlock(None))
    c = Client(srv.url, aiohttp.ClientSession())
    try:
        replayed = {cid: (conv.state, conv.agent_id) for cid, conv in srv.service.router.dispatcher.conversations.items()}
        assert replayed == live
        # the filter is whole for new messages: the skip held for the replayed one only
        assert (await c.post_messages("pdd-a", message("m-2", "b-2")))[0] == 202
        assert db_rows(db, "SELECT action FROM decisions WHERE msg_id = 'm-2'") == [("blocked",)]
    finally:
        await c.http.close()
        await srv.stop()


async def test_a_resend_older_than_the_dedupe_window_is_a_duplicate(tmp_path, env):
    """Ids pushed out of the exact window are remembered in Bloom filters and checked against the
    store: an old resend is answered ``duplicate`` and the new message beside it goes through
    (an old resend used to be routed again, then refused by the journal, failing its batch)."""
    cfg = write_config(tmp_path, dedupe_window=2)
    db = tmp_path / "fenliu.db"
    srv = await start_server(cfg, NoWechat())
    c = Client(srv.url, aiohttp.ClientSession())
    try:
        for i in range(1, 5):
            assert (await c.post_messages("pdd-a", message(f"m-{i}", f"b-{i}")))[0] == 202
        status, body = await c.post_messages("pdd-a", [message("m-1", "b-1"), message("m-5", "b-5")])
        assert (status, body) == (202, {"accepted": 1, "duplicates": 1})
        assert (await c.call("GET", "/healthz"))[1]["status"] == "ok"
    finally:
        await c.http.close()
        await srv.stop()
    assert db_rows(db, "SELECT msg_id FROM messages ORDER BY seq") == [(f"m-{i}",) for i in range(1, 6)]
    assert db_rows(db, "SELECT count(*) FROM decisions WHERE msg_id = 'm-1'") == [(1,)]

    srv = await start_server(cfg, NoWechat())  # replay rebuilds the window and the filters
    c = Client(srv.url, aiohttp.ClientSession())
    try:
        status, body = await c.post_messages("pdd-a", [message("m-2", "b-2"), message("m-5", "b-5"),
                                                       message("m-6", "b-6")])
        assert (status, body) == (202, {"accepted": 1, "duplicates": 2})
    finally:
        await c.http.close()
        await srv.stop()
    assert db_rows(db, "SELECT count(*) FROM messages") == [(6,)]


async def test_a_failed_commit_fails_closed_and_loses_nothing(tmp_path, env):
    """A commit that fails after the router applied its batch in memory (here a trigger standing in
    for a disk error) must not leave the service acknowledging: a retry answered ``duplicate``
    would be a message the store never got. The service answers 503 until restarted; after the
    restart the retry is accepted and journaled once."""
    cfg = write_config(tmp_path)
    db = tmp_path / "fenliu.db"
    add_accounts(db)
    srv = await start_server(cfg, NoWechat())
    c = Client(srv.url, aiohttp.ClientSession())
    try:
        assert (await c.post_messages("pdd-a", message("m-1", "b-1")))[0] == 202
        lead_a = await c.login("acme:lead-a")
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TRIGGER disk_trouble BEFORE INSERT ON journal WHEN NEW.msg_id = 'm-2' "
                         "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
        status, body = await c.post_messages("pdd-a", message("m-2", "b-2"))
        assert status == 503 and "journal" in body["message"]
        status, body = await c.post_messages("pdd-a", message("m-2", "b-2"))  # the bridge retries
        assert status == 503 and "journal" in body["message"]
        status, health = await c.call("GET", "/healthz")
        assert status == 503 and health["status"] == "failed" and "restart" in health["reason"]
        status, body = await c.call("PUT", "/v1/agents/a-01/status", lead_a, json={"status": "online"})
        assert status == 503 and "journal" in body["message"]  # events are refused too
    finally:
        await c.http.close()
        await srv.stop()
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER disk_trouble")

    srv = await start_server(cfg, NoWechat())
    c = Client(srv.url, aiohttp.ClientSession())
    try:
        assert "pdd-a:b-2" not in srv.service.router.dispatcher.conversations
        status, body = await c.post_messages("pdd-a", message("m-2", "b-2"))
        assert (status, body) == (202, {"accepted": 1, "duplicates": 0})
    finally:
        await c.http.close()
        await srv.stop()
    assert db_rows(db, "SELECT msg_id FROM messages ORDER BY seq") == [("m-1",), ("m-2",)]


class Notifier:
    """An observer that would message the agent on every assignment."""

    __name__ = "notifier"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, bool]] = []

    @hookimpl
    def fenliu_assigned(self, decision, ctx):
        self.calls.append((decision.conversation_id, decision.agent_id, ctx.replay))


@pytest.mark.parametrize("snapshot_every", [0, 100_000], ids=["journal", "snapshot"])
async def test_observers_see_the_replay_on_start(tmp_path, env, snapshot_every):
    """Replay calls every hook again for the history; observers are told (``ctx.replay``) so
    that a notifier does not message agents about last week's assignments on each restart.
    From the snapshot written at the stop nothing is replayed, so nothing is observed."""
    cfg = write_config(tmp_path, snapshot_every=snapshot_every)
    add_accounts(tmp_path / "fenliu.db")
    live = Notifier()
    srv = await start_server(cfg, NoWechat(), live)
    c = Client(srv.url, aiohttp.ClientSession())
    try:
        lead_a = await c.login("acme:lead-a")
        assert (await c.call("PUT", "/v1/agents/a-01/status", lead_a, json={"status": "online"}))[0] == 200
        assert (await c.post_messages("pdd-a", message("m-1", "b-1")))[0] == 202
    finally:
        await c.http.close()
        await srv.stop()
    assert live.calls == [("pdd-a:b-1", "a-01", False)]

    again = Notifier()
    srv = await start_server(cfg, NoWechat(), again)
    await srv.stop()
    assert again.calls == ([("pdd-a:b-1", "a-01", True)] if snapshot_every == 0 else [])


async def test_the_current_order_is_the_same_after_a_restart(tmp_path, env):
    """The order a buyer's messages are enriched with is the one they (or the platform) named
    last, live and after a restart alike; naming the current order again rewrites nothing."""
    cfg = write_config(tmp_path)
    db = tmp_path / "fenliu.db"

    def order_of(msg_id: str) -> dict | None:
        return json.loads(db_rows(db, "SELECT body FROM messages WHERE msg_id = ?", msg_id)[0][0]).get("order")

    srv = await start_server(cfg, NoWechat())
    c = Client(srv.url, aiohttp.ClientSession())
    try:
        for msg_id, order in (("m-1", {"order_id": "X", "status": "shipped"}), ("m-2", {"order_id": "Y"}),
                              ("m-3", {"order_id": "X", "status": "shipped"}), ("m-4", None)):
            extra = {"order": order} if order else {}
            assert (await c.post_messages("pdd-a", message(msg_id, "b-1", **extra)))[0] == 202
        updated = db_rows(db, "SELECT updated FROM orders WHERE order_id = 'X'")
        assert (await c.post_messages("pdd-a", message("m-5", "b-1", order={"order_id": "X"})))[0] == 202
        assert db_rows(db, "SELECT updated FROM orders WHERE order_id = 'X'") == updated  # unchanged: not rewritten
    finally:
        await c.http.close()
        await srv.stop()
    assert order_of("m-4")["order_id"] == "X" and order_of("m-5")["status"] == "shipped"

    srv = await start_server(cfg, NoWechat())
    c = Client(srv.url, aiohttp.ClientSession())
    try:
        assert (await c.post_messages("pdd-a", message("m-6", "b-1")))[0] == 202
    finally:
        await c.http.close()
        await srv.stop()
    assert order_of("m-6") == order_of("m-4")
