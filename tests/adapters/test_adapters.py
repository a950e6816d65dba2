"""Adapters against a real server: PMC frames and Doudian pushes become conversation context,
the bridge delivers replies to its callback with retries, replay feeds JSONL, the simulator makes
valid traffic."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import msgspec
import pytest
from aiohttp import web

from adapters import registry
from adapters.doudian import event_sign
from adapters.pinduoduo import PinduoduoAdapter, PmcClient
from adapters.replay import read_messages, replay
from adapters.simulator import Traffic, rate_at
from router.models import Message
from router.server import SIGNATURE_HEADER, check_signature, sign
from tests.conftest import DATA
from tests.router.serve_support import (
    ENV,
    SECRET_A,
    SECRET_B,
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
async def server(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = write_config(tmp_path)
    add_accounts(tmp_path / "fenliu.db")
    srv = await start_server(cfg, NoWechat())
    http = aiohttp.ClientSession()
    try:
        yield srv, Client(srv.url, http)
    finally:
        await http.close()
        await srv.stop()


def test_registry_has_the_builtins():
    assert {"bridge", "simulator", "replay", "pinduoduo", "doudian"} <= set(registry())


async def test_pmc_refund_becomes_context_of_the_open_conversation(server, tmp_path):
    srv, c = server
    agent = await Agent.connect(c, await c.login("acme:a01"))
    await agent.next("hello")
    order = {"order_id": "240101-88", "status": "delivered", "amount": 199.0}
    await c.post_messages("pdd-a", message("m-1", "b-42", text="羽绒服破了个洞", order=order))
    await agent.next("assigned", conversation_id="pdd-a:b-42")

    body = (DATA / "adapter_pmc_frames.json").read_bytes()
    async with c.http.post(f"{c.url}/v1/webhooks/pinduoduo/pdd-a", data=body,
                           headers={SIGNATURE_HEADER: sign(SECRET_A.encode(), body)}) as r:
        assert r.status == 200
        acks = await r.json()
    assert [a["id"] for a in acks] == [7311, 7312, 7313] and {a["commandType"] for a in acks} == {"Ack"}
    ctx = await agent.next("context", conversation_id="pdd-a:b-42")
    assert ctx["order"]["status"] == "refund_requested" and ctx["order"]["amount"] == 199.0
    await c.post_messages("pdd-a", message("m-2", "b-42", text="退款什么时候到"))
    (raw,) = db_rows(tmp_path / "fenliu.db", "SELECT body FROM messages WHERE msg_id = 'm-2'")[0]
    assert json.loads(raw)["order"]["status"] == "refund_requested"
    assert db_rows(tmp_path / "fenliu.db", "SELECT buyer_id FROM orders WHERE order_id = '240101-90'") == [("b-50",)]

    async with c.http.post(f"{c.url}/v1/webhooks/pinduoduo/pdd-a", data=body,
                           headers={SIGNATURE_HEADER: "sha256=00"}) as r:
        assert r.status == 401
    bad = b'{"commandType": "Nope"}'
    async with c.http.post(f"{c.url}/v1/webhooks/pinduoduo/pdd-a", data=bad,
                           headers={SIGNATURE_HEADER: sign(SECRET_A.encode(), bad)}) as r:
        assert r.status == 400 and "PMC" in (await r.json())["message"]
    await agent.close()


async def test_doudian_push_signature_and_answer(server, tmp_path):
    srv, c = server
    body = (DATA / "adapter_doudian_push.json").read_bytes()
    headers = {"app-id": "7000001", "event-sign": event_sign("7000001", body, SECRET_B)}
    async with c.http.post(f"{c.url}/v1/webhooks/doudian/tb-b", data=body, headers=headers) as r:
        assert r.status == 200 and await r.json() == {"code": 0, "msg": "success"}
    rows = db_rows(tmp_path / "fenliu.db", "SELECT order_id, buyer_id, body FROM orders")
    assert [(o, b) for o, b, _ in rows] == [("6920000000000000088", "b-60")]
    assert json.loads(rows[0][2]) == {"order_id": "6920000000000000088", "status": "refund_requested", "amount": 89.0}
    headers["event-sign"] = "0" * 32
    async with c.http.post(f"{c.url}/v1/webhooks/doudian/tb-b", data=body, headers=headers) as r:
        assert r.status == 401 and "event-sign" in (await r.json())["message"]
    async with c.http.post(f"{c.url}/v1/webhooks/nosuch/tb-b", data=body) as r:
        assert r.status == 404


async def test_bridge_delivers_replies_with_retry(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    received: list[tuple[bytes, str]] = []

    async def callback(request: web.Request) -> web.Response:
        body = await request.read()
        received.append((body, request.headers.get(SIGNATURE_HEADER, "")))
        return web.Response(status=500 if len(received) == 1 else 200)

    app = web.Application()
    app.router.add_post("/cb", callback)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    cb_url = f"http://127.0.0.1:{runner.addresses[0][1]}/cb"
    cfg = write_config(tmp_path)
    shops = (cfg / "shops.toml").read_text().replace('secret_env = "FENLIU_TEST_SECRET_A"',
                                                     f'secret_env = "FENLIU_TEST_SECRET_A"\ncallback_url = "{cb_url}"')
    (cfg / "shops.toml").write_text(shops)
    add_accounts(tmp_path / "fenliu.db")
    srv = await start_server(cfg, NoWechat())
    try:
        async with aiohttp.ClientSession() as http:
            c = Client(srv.url, http)
            agent = await Agent.connect(c, await c.login("acme:a01"))
            await agent.next("hello")
            await c.post_messages("pdd-a", message("m-1", "b-1"))
            await agent.next("assigned")
            assert (await agent.request({"type": "accept", "conversation_id": "pdd-a:b-1"}))["ok"]
            assert (await agent.request({"type": "reply", "conversation_id": "pdd-a:b-1", "text": "有的亲"}))["ok"]
            async with asyncio.timeout(10):
                while not db_rows(tmp_path / "fenliu.db", "SELECT acked FROM outbox WHERE acked IS NOT NULL"):
                    await asyncio.sleep(0.05)
            await agent.close()
    finally:
        await srv.stop()
        await runner.cleanup()
    assert len(received) == 2 and received[0][0] == received[1][0]
    body, signature = received[1]
    assert check_signature(SECRET_A.encode(), body, signature) is None
    sent = json.loads(body)
    assert sent["text"] == "有的亲" and sent["buyer_id"] == "b-1" and sent["reply_id"] == 1
    assert db_rows(tmp_path / "fenliu.db", "SELECT attempts FROM outbox") == [(1,)]


async def test_replay_posts_jsonl_and_reports_bad_lines(server, tmp_path):
    srv, c = server
    errors: list[str] = []
    with open(DATA / "adapter_replay.jsonl", "rb") as f:
        messages = list(read_messages(f, errors))
    assert [m.msg_id for m in messages] == ["r-1", "r-2", "r-3"]
    assert errors and errors[0].startswith("line 3:")
    counts = await replay(c.url, messages, {"pdd-a": SECRET_A.encode(), "tb-b": SECRET_B.encode()}, batch=5)
    assert counts == {"202": 3}
    assert sorted(r[0] for r in db_rows(tmp_path / "fenliu.db", "SELECT msg_id FROM messages")) == ["r-1", "r-2", "r-3"]


async def test_pmc_client_acks_and_heartbeats(server):
    srv, c = server
    got: list[dict] = []
    done = asyncio.Event()

    async def pmc(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        frames = json.loads((DATA / "adapter_pmc_frames.json").read_text())
        for f in frames:
            await ws.send_json(f)
        async for msg in ws:
            got.append(json.loads(msg.data))
            if sum(1 for g in got if g["commandType"] == "Ack") == 3:
                done.set()
        return ws

    app = web.Application()
    app.router.add_get("/pmc", pmc)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    adapter = PinduoduoAdapter(srv.service.config.shops["pdd-a"], srv.service)
    client = PmcClient(adapter, f"http://127.0.0.1:{runner.addresses[0][1]}/pmc", heartbeat_s=0.05)
    task = asyncio.create_task(client.run())
    try:
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()
    assert any(g["commandType"] == "HeartBeat" for g in got)
    assert [g["id"] for g in got if g["commandType"] == "Ack"] == [7311, 7312, 7313]
    assert srv.service.orders[("pdd-a", "b-50")].status == "shipped"


def test_simulator_traffic_is_valid_and_reproducible():
    a = list(Traffic(["pdd-a", "tb-b"], buyers=30, seed=3).stream(300))
    b = list(Traffic(["pdd-a", "tb-b"], buyers=30, seed=3).stream(300))
    assert a == b
    msgs = [msgspec.convert(m, Message) for m in a]
    assert len({m.msg_id for m in msgs}) == 300
    assert {m.shop_id for m in msgs} == {"pdd-a", "tb-b"}
    texts = " ".join(m.text for m in msgs)
    assert "快递" in texts and "退款" in texts and "尺码" in texts or "码" in texts
    assert any("vip" in m.buyer.tags for m in msgs if m.buyer)
    assert rate_at(110.0, 2.0) == 12.0 and rate_at(10.0, 2.0) == 2.0


async def test_pmc_client_survives_bad_frames(server, fenliu_logs):
    """A frame that is not JSON, or whose content holds a fee past 1e308 or nesting thousands
    deep, is one log line each: the socket stays up, the good frame after them is applied, and
    the unreadable-content frames are acked (the platform would only push the same bytes again)."""
    srv, c = server
    got: list[dict] = []
    done = asyncio.Event()
    huge = '{"tid": "240101-91", "buyer_id": "b-51", "refund_fee": 1' + "0" * 400 + "}"
    deep = '{"tid": "240101-92", "x": ' + "[" * 3000 + "]" * 3000 + "}"
    good = '{"tid": "240101-93", "buyer_id": "b-53", "refund_fee": 990}'

    def frame(frame_id: int, content: str) -> dict:
        return {"commandType": "Common", "id": frame_id,
                "message": {"type": "pdd_refund_RefundCreated", "mallID": 1001, "content": content}}

    async def pmc(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("not a frame {")
        await ws.send_str("[" * 3000 + "]" * 3000)
        for f in (frame(1, huge), frame(2, deep), frame(3, good)):
            await ws.send_json(f)
        async for msg in ws:
            got.append(json.loads(msg.data))
            if sum(1 for g in got if g["commandType"] == "Ack") == 3:
                done.set()
        return ws

    app = web.Application()
    app.router.add_get("/pmc", pmc)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    adapter = PinduoduoAdapter(srv.service.config.shops["pdd-a"], srv.service)
    client = PmcClient(adapter, f"http://127.0.0.1:{runner.addresses[0][1]}/pmc", heartbeat_s=0.05)
    task = asyncio.create_task(client.run())
    try:
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()
    assert [g["id"] for g in got if g["commandType"] == "Ack"] == [1, 2, 3]
    assert srv.service.orders[("pdd-a", "b-53")].amount == 9.9
    assert ("pdd-a", "b-51") not in srv.service.orders
    bad = [(e["event"], e.get("id")) for e in fenliu_logs if e["event"] in ("pmc_bad_frame", "pmc_bad_content")]
    assert bad == [("pmc_bad_frame", None), ("pmc_bad_frame", None), ("pmc_bad_content", 1), ("pmc_bad_content", 2)]
    assert not [e for e in fenliu_logs if e["event"] == "pmc_disconnected" or e.get("exc_info")]
