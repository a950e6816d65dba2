"""Shop isolation as a matrix: every role × permitted shops × every endpoint and frame type.

Three shops of two clients: ``pdd-1001`` and ``pdd-1002`` (one agent, ``s-01``, serves both),
``tb-2001``. Each shop's buyer ids are markers: a response or a pushed frame that an account
may not see must contain none of the markers of the shops outside its scope. The endpoint list
is the app's own router, so a new endpoint fails :func:`test_every_route_is_in_the_matrix`
until it is added here.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters import OrderContext
from router.storage import accounts as acct
from router.service.access import access_of
from router.core.models import AfterSale, Order
from router.storage.store import Store
from tests.router.serve_support import ENV, PASSWORD, Client, start_server

pytestmark = pytest.mark.anyio

SHOPS = ("pdd-1001", "pdd-1002", "tb-2001")
SECRETS = {"pdd-1001": "s-p1", "pdd-1002": "s-p2", "tb-2001": "s-t1"}
BUYER = {s: f"buyer-{s}-x" for s in SHOPS}
CID = {s: f"{s}:{BUYER[s]}" for s in SHOPS}

# account -> (role, the shops it may see)
ACCOUNTS: dict[str, tuple[str, set[str]]] = {
    "acme": ("admin", set(SHOPS)),
    "acme:admin-p1": ("admin", {"pdd-1001"}),
    "acme:lead-all": ("supervisor", set(SHOPS)),
    "acme:lead-p1": ("supervisor", {"pdd-1001"}),
    "acme:lead-t1": ("supervisor", {"tb-2001"}),
    "acme:s01-p1": ("agent", {"pdd-1001"}),  # agent s-01 serves pdd-1001 and pdd-1002
    "acme:p01": ("agent", {"pdd-1001"}),
    "acme:t01": ("agent", {"tb-2001"}),
}


def write_config(root: Path) -> Path:
    cfg = root / "config"
    (cfg / "policies").mkdir(parents=True, exist_ok=True)
    (cfg / "fenliu.toml").write_text(f"""
[server]
host = "127.0.0.1"
port = 0
token_ttl_s = 3600

[storage]
path = "{root / 'fenliu.db'}"

[plugins]
disabled = ["bot", "sensitive"]

[logging]
level = "warning"
""", encoding="utf-8")
    (cfg / "shops.toml").write_text("".join(f"""
[[shops]]
id = "{s}"
platform = "{'taobao' if s.startswith('tb') else 'pinduoduo'}"
secret_env = "FENLIU_ISO_{s.replace('-', '_').upper()}"
""" for s in SHOPS), encoding="utf-8")
    (cfg / "agents.toml").write_text("""
[[agents]]
id = "s-01"
skills = ["presale", "logistics", "aftersale", "vip"]
shops = ["pdd-1001", "pdd-1002"]
max_concurrent = 10

[[agents]]
id = "p-01"
skills = ["presale", "logistics", "aftersale", "vip"]
shops = ["pdd-1001"]
max_concurrent = 10

[[agents]]
id = "t-01"
skills = ["presale", "logistics", "aftersale", "vip"]
shops = ["tb-2001"]
max_concurrent = 10
""", encoding="utf-8")
    (cfg / "policies" / "default.toml").write_text("""
[dispatch]
strategy = "round_robin"
sticky_hours = 0
accept_timeout_s = 600
on_agent_offline = "reroute"
targets = [{ skills = ["@skill", "presale", "logistics", "aftersale"] }]
""", encoding="utf-8")
    return cfg


def add_accounts(db: Path) -> None:
    store = Store(db)

    def create(conn: Any) -> None:
        acct.add(conn, "acme", PASSWORD, "admin", ("*",))
        acct.add(conn, "acme:admin-p1", PASSWORD, "admin", ("pdd-1001",))
        acct.add(conn, "acme:lead-all", PASSWORD, "supervisor", ("*",))
        acct.add(conn, "acme:lead-p1", PASSWORD, "supervisor", ("pdd-1001",))
        acct.add(conn, "acme:lead-t1", PASSWORD, "supervisor", ("tb-2001",))
        # legacy rows: an agent account stored with all shops is still held to its agent's
        acct.add(conn, "acme:s01-p1", PASSWORD, "agent", ("pdd-1001",), "s-01")
        acct.add(conn, "acme:p01", PASSWORD, "agent", ("*",), "p-01")
        acct.add(conn, "acme:t01", PASSWORD, "agent", ("tb-2001",), "t-01")

    store.run_sync(create)
    store.close_sync()


def forbidden_markers(account: str) -> list[str]:
    allowed = ACCOUNTS[account][1]
    return [m for s in SHOPS if s not in allowed for m in (BUYER[s], s)]


def assert_no_leak(account: str, what: str, body: Any) -> None:
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    leaked = [m for m in forbidden_markers(account) if m in text]
    assert not leaked, f"{account} sees {leaked} in {what}: {text[:400]}"


class Feed:
    """Every frame a socket receives, collected in the background."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.closed: tuple[int | None, str] | None = None
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(msg.data))
        self.closed = (self.ws.close_code, "")

    async def wait(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for f in self.frames:
                    if pred(f):
                        return f
                await asyncio.sleep(0.02)

    async def send(self, frame: dict[str, Any]) -> dict[str, Any]:
        ref = f"r{len(self.frames)}-{id(frame)}"
        await self.ws.send_json({**frame, "ref": ref})
        return await self.wait(lambda f: f.get("type") == "result" and f.get("ref") == ref)

    async def close(self) -> None:
        await self.ws.close()
        await self.task


@pytest.fixture
async def world(tmp_path, monkeypatch):
    for s, secret in SECRETS.items():
        monkeypatch.setenv(f"FENLIU_ISO_{s.replace('-', '_').upper()}", secret)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = write_config(tmp_path)
    add_accounts(tmp_path / "fenliu.db")
    server = await start_server(cfg)
    async with aiohttp.ClientSession() as http:
        c = Client(server.url, http)
        tokens = {"acme": await c.login("acme")}  # one real login; the others' tokens are issued directly
        for name in ACCOUNTS:
            account = await server.service.store.call(lambda conn, name=name: acct.get(conn, name))
            tokens.setdefault(name, acct.issue_token(server.service.token_key, account, 3600)[0])
        try:
            yield server, c, tokens
        finally:
            await server.stop()


async def ws_connect(c: Client, path: str, token: str) -> Feed:
    ws = await c.http.ws_connect(f"{c.url.replace('http', 'ws')}{path}", headers={"Authorization": f"Bearer {token}"})
    return Feed(ws)


async def post(c: Client, shop: str, msg_id: str, text: str = "在吗?有XL码吗") -> None:
    status, body = await c.post_messages(shop, {"shop_id": shop, "msg_id": msg_id, "buyer_id": BUYER[shop], "text": text},
                                         secret=SECRETS[shop])
    assert status == 202, body


# -- the endpoint matrix -------------------------------------------------------------------------------

# route -> requests (method, path, json body, the shop it targets or None for a listing)
def requests_for(route: str) -> list[tuple[str, str, Any, str | None]]:
    per_shop = {
        "GET /v1/conversations/{cid}": lambda s: ("GET", f"/v1/conversations/{CID[s]}", None),
        "POST /v1/conversations/{cid}/transfer": lambda s: ("POST", f"/v1/conversations/{CID[s]}/transfer",
                                                             {"to_skill": "presale"}),
        "GET /v1/shops/{shop_id}/buyers/{buyer_id}": lambda s: ("GET", f"/v1/shops/{s}/buyers/{BUYER[s]}", None),
        "PUT /v1/shops/{shop_id}/buyers/{buyer_id}": lambda s: ("PUT", f"/v1/shops/{s}/buyers/{BUYER[s]}",
                                                                 {"add_tags": ["t"]}),
        "GET /v1/quick-replies": lambda s: ("GET", f"/v1/quick-replies?conversation_id={CID[s]}", None),
        "POST /v1/replies/check": lambda s: ("POST", "/v1/replies/check", {"conversation_id": CID[s], "text": "好的"}),
    }
    if route in per_shop:
        return [(*per_shop[route](s), s) for s in SHOPS]
    listings = {
        "GET /v1/conversations": [("GET", "/v1/conversations", None, None)]
        + [("GET", f"/v1/conversations?shop_id={s}", None, s) for s in SHOPS],
        "GET /v1/agents": [("GET", "/v1/agents", None, None)],
        "GET /v1/stats": [("GET", "/v1/stats", None, None)] + [("GET", f"/v1/stats?shop={s}", None, s) for s in SHOPS],
        "GET /v1/me": [("GET", "/v1/me", None, None)],
        "GET /v1/today": [("GET", "/v1/today", None, None)],
        "GET /v1/dashboard": [("GET", "/v1/dashboard", None, None)],
        "GET /v1/aftersales": [("GET", "/v1/aftersales", None, None)]
        + [("GET", f"/v1/aftersales?shop_id={s}", None, s) for s in SHOPS],
        "POST /v1/auth/ws-ticket": [("POST", "/v1/auth/ws-ticket", None, None)],
    }
    return listings.get(route, [])


# Routes the matrix checks elsewhere: the agents' and supervisors' sockets (frames, below),
# status changes and reloads (actions, below), and those open to anyone or signed by a shop.
ELSEWHERE = {"GET /v1/agents/ws", "GET /v1/supervisors/ws", "PUT /v1/agents/{agent_id}/status", "POST /v1/admin/reload"}


def routes(server: Any) -> dict[str, str]:
    out = {}
    for r in server.runner.app.router.routes():
        if r.method == "HEAD":
            continue
        out[f"{r.method} {r.resource.canonical}"] = access_of(r.handler)
    return out


async def test_every_route_is_in_the_matrix(world):
    server, c, tokens = world
    for route, access in routes(server).items():
        assert access is not None, route
        if access.startswith("account"):
            assert requests_for(route) or route in ELSEWHERE, f"{route} is not in the isolation matrix"


async def test_no_endpoint_reveals_another_shop(world):
    server, c, tokens = world
    agents = {name: await ws_connect(c, "/v1/agents/ws", tokens[name]) for name in ("acme:s01-p1", "acme:p01", "acme:t01")}
    for f in agents.values():
        await f.wait(lambda x: x["type"] == "hello")
    for s in SHOPS:
        await post(c, s, f"m-{s}")
    await server.service.order_context([OrderContext(s, Order(order_id=f"o-{s}", status="refund_requested"), BUYER[s],
                                                     aftersale=AfterSale(f"as-{s}", "requested"))
                                        for s in SHOPS])
    convs = lambda: c.call("GET", "/v1/conversations", tokens["acme"])  # noqa: E731
    async with asyncio.timeout(10):
        while len([x for x in (await convs())[1]["conversations"] if x["agent_id"]]) < 3:
            await asyncio.sleep(0.05)
    checked = 0
    for route, access in routes(server).items():
        if not access.startswith("account"):
            continue
        for method, path, body, target in requests_for(route):
            for account, (_role, allowed) in ACCOUNTS.items():
                status, resp = await c.call(method, path, tokens[account], json=body)
                checked += 1
                assert status < 500, (account, method, path, resp)
                if target is not None and target not in allowed:
                    assert status in (403, 404), (account, method, path, status, resp)
                else:
                    assert_no_leak(account, f"{method} {path}", resp)
    assert checked > 150
    for f in agents.values():
        await f.close()


async def test_pushed_frames_stay_in_the_accounts_shops(world):
    """The shared agent's account sees only pdd-1001: every frame type about pdd-1002 is held back."""
    server, c, tokens = world
    shared = await ws_connect(c, "/v1/agents/ws", tokens["acme:s01-p1"])
    lead_p1 = await ws_connect(c, "/v1/supervisors/ws", tokens["acme:lead-p1"])
    lead_t1 = await ws_connect(c, "/v1/supervisors/ws", tokens["acme:lead-t1"])
    await shared.wait(lambda f: f["type"] == "hello")
    for s in ("pdd-1001", "pdd-1002"):
        await post(c, s, f"m1-{s}")
        await post(c, s, f"m2-{s}", "还在吗")
    await shared.wait(lambda f: f["type"] == "assigned" and f["conversation_id"] == CID["pdd-1001"])
    await shared.wait(lambda f: f["type"] == "message" and f["conversation_id"] == CID["pdd-1001"])
    # order news (context), a move away (transferred) and a close (closed) of both conversations
    await server.service.order_context([OrderContext(s, Order(order_id=f"o-{s}", status="refunding"), BUYER[s])
                                        for s in ("pdd-1001", "pdd-1002")])
    await shared.wait(lambda f: f["type"] == "context" and f["conversation_id"] == CID["pdd-1001"])
    r = await shared.send({"type": "reply", "conversation_id": CID["pdd-1002"], "text": "您好"})
    assert not r["ok"] and "forbidden" in r["reason"]
    r = await shared.send({"type": "close", "conversation_id": CID["pdd-1002"]})
    assert not r["ok"]
    await shared.ws.close()
    await shared.task
    # a reconnect's hello lists only what the account may see
    again = await ws_connect(c, "/v1/agents/ws", tokens["acme:s01-p1"])
    hello = await again.wait(lambda f: f["type"] == "hello")
    assert [x["conversation_id"] for x in hello["conversations"]] == [CID["pdd-1001"]]
    for s in ("pdd-1001", "pdd-1002"):
        status, _ = await c.call("POST", f"/v1/conversations/{CID[s]}/transfer", tokens["acme:lead-all"],
                                 json={"to_skill": "presale"})
        assert status == 200
    await again.wait(lambda f: f["type"] == "transferred" and f["conversation_id"] == CID["pdd-1001"])
    await post(c, "tb-2001", "m1-t")
    await asyncio.sleep(2.5)  # a dashboard frame every 2 s
    await lead_p1.wait(lambda f: f["type"] == "dashboard")
    await lead_p1.wait(lambda f: f["type"] == "decision" and f["shop_id"] == "pdd-1001")
    await lead_t1.wait(lambda f: f["type"] == "decision" and f["shop_id"] == "tb-2001")
    for feed in (again, lead_p1, lead_t1):
        await feed.close()
    kinds = {f["type"] for f in shared.frames + again.frames}
    assert {"hello", "assigned", "message", "context", "result", "transferred"} <= kinds
    for f in shared.frames + again.frames:
        if f["type"] == "result":  # the answer to the client's own frame echoes the id it sent
            f = {**f, "conversation_id": None}
        assert_no_leak("acme:s01-p1", f"frame {f['type']}", f)
    for f in lead_p1.frames:
        assert_no_leak("acme:lead-p1", f"frame {f['type']}", f)
    for f in lead_t1.frames:
        assert_no_leak("acme:lead-t1", f"frame {f['type']}", f)


async def test_actions_follow_the_same_rule(world):
    server, c, tokens = world
    shared = await ws_connect(c, "/v1/agents/ws", tokens["acme:s01-p1"])
    await shared.wait(lambda f: f["type"] == "hello")
    await post(c, "pdd-1002", "m-p2")
    async with asyncio.timeout(10):
        while (await c.call("GET", f"/v1/conversations/{CID['pdd-1002']}", tokens["acme"]))[1].get("agent_id") != "s-01":
            await asyncio.sleep(0.05)
    # a supervisor of pdd-1001 cannot take s-01 offline: that would move pdd-1002's conversations
    status, body = await c.call("PUT", "/v1/agents/s-01/status", tokens["acme:lead-p1"], json={"status": "offline"})
    assert status == 403 and body["error"] == "agent_forbidden", body
    # the all-shops supervisor may; what moved is shown as its scope allows
    status, body = await c.call("PUT", "/v1/agents/s-01/status", tokens["acme:lead-all"], json={"status": "offline"})
    assert status == 200 and {d["shop_id"] for d in body["moved"]} == {"pdd-1002"}, body
    status, body = await c.call("PUT", "/v1/agents/p-01/status", tokens["acme:lead-p1"], json={"status": "break"})
    assert status == 200, body
    status, body = await c.call("PUT", "/v1/agents/t-01/status", tokens["acme:lead-p1"], json={"status": "break"})
    assert status == 403
    # an agent may set only its own status
    status, body = await c.call("PUT", "/v1/agents/p-01/status", tokens["acme:t01"], json={"status": "online"})
    assert status == 403
    status, body = await c.call("PUT", "/v1/agents/t-01/status", tokens["acme:t01"], json={"status": "online"})
    assert status == 200
    # reloading is for an admin of all shops
    for account in ("acme:admin-p1", "acme:lead-all", "acme:lead-p1", "acme:p01"):
        status, body = await c.call("POST", "/v1/admin/reload", tokens[account])
        assert status == 403, (account, body)
    status, body = await c.call("POST", "/v1/admin/reload", tokens["acme"])
    assert status == 200, body
    # another shop's agent is not a transfer target
    await post(c, "pdd-1001", "m-p1")
    status, body = await c.call("POST", f"/v1/conversations/{CID['pdd-1001']}/transfer", tokens["acme:lead-p1"],
                                json={"to_agent": "t-01"})
    assert status == 404 and "t-01" in body["message"]
    await shared.close()


async def test_agents_list_counts_other_shops_conversations(world):
    server, c, tokens = world
    shared = await ws_connect(c, "/v1/agents/ws", tokens["acme:s01-p1"])
    await shared.wait(lambda f: f["type"] == "hello")
    await post(c, "pdd-1002", "m-p2")
    async with asyncio.timeout(10):
        while True:
            status, body = await c.call("GET", "/v1/agents", tokens["acme:lead-p1"])
            s01 = next(a for a in body["agents"] if a["id"] == "s-01")
            if s01["other_conversations"] == 1:
                break
            await asyncio.sleep(0.05)
    assert s01["conversations"] == [] and s01["shops"] == ["pdd-1001"]
    status, body = await c.call("GET", "/v1/agents", tokens["acme:lead-all"])
    s01 = next(a for a in body["agents"] if a["id"] == "s-01")
    assert s01["conversations"] == [CID["pdd-1002"]] and s01["other_conversations"] == 0
    status, body = await c.call("GET", "/v1/agents", tokens["acme:lead-t1"])
    assert [a["id"] for a in body["agents"]] == ["t-01"]
    await shared.close()
