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
from adapters.bridge import REDELIVERY_HEADER
from adapters.doudian import event_sign
from adapters.pinduoduo import PinduoduoAdapter, PmcClient
from adapters.replay import read_messages, replay
from adapters.simulator import Traffic, rate_at
from router.core.models import Message
from router.core.signing import SIGNATURE_HEADER, check_signature, sign
from tests.adapters.support import Bridge, answer_once
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
    assert [a["id"] for a in acks] == [7311, 7312, 7313, 7314, 7315] and {a["commandType"] for a in acks} == {"Ack"}
    ctx = await agent.next("context", conversation_id="pdd-a:b-42")
    assert ctx["order"]["status"] == "refund_requested" and ctx["order"]["amount"] == 199.0
    ctx = await agent.next("context", conversation_id="pdd-a:b-42")
    assert ctx["order"]["status"] == "refund_agreed"
    await c.post_messages("pdd-a", message("m-2", "b-42", text="退款什么时候到"))
    (raw,) = db_rows(tmp_path / "fenliu.db", "SELECT body FROM messages WHERE msg_id = 'm-2'")[0]
    assert json.loads(raw)["order"]["status"] == "refund_agreed"
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
    rows = db_rows(tmp_path / "fenliu.db", "SELECT order_id, buyer_id, body FROM orders ORDER BY order_id")
    assert [(o, b) for o, b, _ in rows] == [("6920000000000000077", "b-62"), ("6920000000000000088", "b-60"),
                                            ("6920000000000000099", None)]  # a buyer no message named yet
    assert json.loads(rows[1][2]) == {"order_id": "6920000000000000088", "status": "refund_requested"}
    headers["event-sign"] = "0" * 32
    async with c.http.post(f"{c.url}/v1/webhooks/doudian/tb-b", data=body, headers=headers) as r:
        assert r.status == 401 and "event-sign" in (await r.json())["message"]
    async with c.http.post(f"{c.url}/v1/webhooks/nosuch/tb-b", data=body) as r:
        assert r.status == 404


async def test_bridge_delivers_replies_with_retry(tmp_path, monkeypatch):
    """A ``500`` is the bridge saying it did not take the reply: it is sent again as it was,
    without asking the bridge first (nothing is in doubt) and without a redelivery mark."""
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    async with Bridge() as bridge:
        bridge.statuses = [500]
        await answer_once(tmp_path, bridge)
    assert len(bridge.bodies) == 2 and bridge.bodies[0] == bridge.bodies[1]
    body, (_, headers) = bridge.bodies[1], bridge.posts[1]
    assert check_signature(SECRET_A.encode(), body, headers[SIGNATURE_HEADER]) is None
    sent = json.loads(body)
    assert sent["text"] == "有的亲" and sent["buyer_id"] == "b-1" and sent["reply_id"] == 1
    assert db_rows(tmp_path / "fenliu.db", "SELECT attempts FROM outbox") == [(1,)]
    assert bridge.lookups == [] and all(REDELIVERY_HEADER not in h for _, h in bridge.posts)


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
            if sum(1 for g in got if g["commandType"] == "Ack") == 5:
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
    assert [g["id"] for g in got if g["commandType"] == "Ack"] == [7311, 7312, 7313, 7314, 7315]
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
    (body,) = db_rows(srv.service.store.path, "SELECT body FROM aftersales WHERE order_id = '240101-93'")[0]
    assert json.loads(body)["amount"] == 9.9 and ("pdd-a", "b-53") in srv.service.orders
    assert ("pdd-a", "b-51") not in srv.service.orders
    bad = [(e["event"], e.get("id")) for e in fenliu_logs if e["event"] in ("pmc_bad_frame", "pmc_bad_content")]
    assert bad == [("pmc_bad_frame", None), ("pmc_bad_frame", None), ("pmc_bad_content", 1), ("pmc_bad_content", 2)]
    assert not [e for e in fenliu_logs if e["event"] == "pmc_disconnected" or e.get("exc_info")]


# -- the buyer's story: logistics and refund pushes in the buyer panel and the 售后 list --------------


async def _push_pmc(c: Client) -> None:
    body = (DATA / "adapter_pmc_frames.json").read_bytes()
    async with c.http.post(f"{c.url}/v1/webhooks/pinduoduo/pdd-a", data=body,
                           headers={SIGNATURE_HEADER: sign(SECRET_A.encode(), body)}) as r:
        assert r.status == 200, await r.text()


async def _push_doudian(c: Client) -> None:
    body = (DATA / "adapter_doudian_push.json").read_bytes()
    headers = {"app-id": "7000001", "event-sign": event_sign("7000001", body, SECRET_B)}
    async with c.http.post(f"{c.url}/v1/webhooks/doudian/tb-b", data=body, headers=headers) as r:
        assert r.status == 200, await r.text()


async def test_pmc_logistics_and_refund_make_the_buyers_orders(server):
    """A buyer's message names one order (with its goods); PMC pushes ship another order with a
    courier and three scans, and open then agree a return on the first: the buyer panel's
    profile lists both orders with everything the pushes said, the goods the message gave kept."""
    srv, c = server
    agent = await Agent.connect(c, await c.login("acme:a01"))
    await agent.next("hello")
    order = {"order_id": "240101-88", "status": "delivered", "amount": 199.0, "goods": "轻薄羽绒马甲 米白 L"}
    await c.post_messages("pdd-a", message("m-1", "b-42", text="马甲有个洞，我要退货", order=order))
    await agent.next("assigned", conversation_id="pdd-a:b-42")
    await _push_pmc(c)
    lead = await c.login("acme:lead-a")

    status, p = await c.call("GET", "/v1/shops/pdd-a/buyers/b-42", lead)
    assert status == 200, p
    (o,) = p["orders"]
    assert o["order"] == {"order_id": "240101-88", "status": "refund_agreed", "amount": 199.0, "goods": "轻薄羽绒马甲 米白 L"}
    (a,) = o["aftersales"]
    assert (a["aftersale_id"], a["state"], a["kind"], a["amount"], a["reason"]) == ("88123", "agreed", "return", 199.0, "质量问题")
    assert a["opened"] == 1763880000.123 and a["updated"] == 1763970000.123

    status, p = await c.call("GET", "/v1/shops/pdd-a/buyers/b-50", lead)
    (o,) = p["orders"]
    assert o["order"] == {"order_id": "240101-90", "status": "shipped", "amount": 359.0, "goods": "加厚连帽羽绒服 黑色 XL",
                          "courier": "中通快递", "tracking_no": "78311234567890"}
    assert [e["text"] for e in o["logistics"]] == ["【广州市】快件已到达 广州转运中心", "【杭州市】快件已发往 广州转运中心",
                                                   "【杭州市】中通快递 杭州萧山网点 已揽收"]
    assert [e["status"] for e in o["logistics"]] == ["in_transit", "in_transit", "collected"]
    assert o["logistics"][-1]["ts"] == 1763893200.0  # 2025-11-23 18:20 China Standard Time
    assert o["aftersales"] == []

    # pushing the same frames again (the platform retries) repeats no scan and keeps the state
    await _push_pmc(c)
    status, p = await c.call("GET", "/v1/shops/pdd-a/buyers/b-50", lead)
    assert len(p["orders"][0]["logistics"]) == 3
    # the 售后 list: the open request, with the conversation the agent holds
    status, body = await c.call("GET", "/v1/aftersales", await c.login("acme:a01"))
    assert status == 200, body
    (item,) = body["aftersales"]
    assert (item["shop_id"], item["buyer_id"], item["conversation_id"], item["conversation_state"], item["agent_id"]) == (
        "pdd-a", "b-42", "pdd-a:b-42", "reserved", "a-01")
    assert item["order"]["goods"] == "轻薄羽绒马甲 米白 L" and item["aftersale"]["state"] == "agreed"
    await agent.close()


async def test_doudian_logistics_and_refunds_and_the_aftersale_list(server):
    """Doudian ships an order before any message names it; the buyer's later message (an order
    card) ties it to the buyer, whose panel then shows courier, tracking number and scans. A
    request that was refunded leaves the 售后 list; each account sees only its shops' requests."""
    srv, c = server
    await _push_doudian(c)
    await c.post_messages("tb-b", message("d-1", "b-61", shop="tb-b", text="[订单卡片]", kind="order_card",
                                          order={"order_id": "6920000000000000099"}))
    admin = await c.login("acme")
    status, p = await c.call("GET", "/v1/shops/tb-b/buyers/b-61", admin)
    (o,) = p["orders"]
    assert o["order"] == {"order_id": "6920000000000000099", "status": "shipped", "amount": 129.0,
                          "goods": "65W氮化镓充电器", "courier": "顺丰速运", "tracking_no": "SF1400123456789"}
    assert [(e["status"], e["text"]) for e in o["logistics"]][0] == ("delivering", "【广州市】快递员 王师傅 正在派件")
    assert len(o["logistics"]) == 3

    status, p = await c.call("GET", "/v1/shops/tb-b/buyers/b-62", admin)
    (a,) = p["orders"][0]["aftersales"]
    assert (a["state"], a["kind"], a["amount"]) == ("refunded", "refund", 59.0)

    status, body = await c.call("GET", "/v1/aftersales", admin)
    assert [(i["shop_id"], i["buyer_id"], i["aftersale"]["aftersale_id"], i["aftersale"]["state"], i["aftersale"]["kind"],
             i["aftersale"]["reason"]) for i in body["aftersales"]] == [
        ("tb-b", "b-60", "71000001", "requested", "return", "尺码不合适")]
    assert body["aftersales"][0]["conversation_state"] is None  # b-60 has no open conversation

    await _push_pmc(c)
    status, body = await c.call("GET", "/v1/aftersales", admin)
    assert {i["shop_id"] for i in body["aftersales"]} == {"pdd-a", "tb-b"}
    for account, shop in (("acme:lead-a", "pdd-a"), ("acme:a01", "pdd-a"), ("acme:b01", "tb-b")):
        status, body = await c.call("GET", "/v1/aftersales", await c.login(account))
        assert status == 200 and {i["shop_id"] for i in body["aftersales"]} == {shop}, (account, body)
    status, body = await c.call("GET", "/v1/aftersales?shop_id=tb-b", await c.login("acme:lead-a"))
    assert status == 403 and "tb-b" not in json.dumps(body.get("aftersales", []))
    status, body = await c.call("GET", "/v1/shops/tb-b/buyers/b-61", await c.login("acme:lead-a"))
    assert status == 403
