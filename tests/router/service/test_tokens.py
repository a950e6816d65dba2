"""Tokens only in the Authorization header, single-use WebSocket tickets, and open sockets closed
(code 4401) once their account's token stops being valid: password changed, account disabled or
removed, token expired."""

from __future__ import annotations

import asyncio
import aiohttp
import pytest

from router.storage import accounts as acct
from router.service.access import CLOSE_REVOKED, TICKETS
from tests.router.serve_support import ENV, Client, add_accounts, start_server, write_config

pytestmark = pytest.mark.anyio


@pytest.fixture
async def served(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = write_config(tmp_path)
    add_accounts(tmp_path / "fenliu.db")
    server = await start_server(cfg)
    async with aiohttp.ClientSession() as http:
        try:
            yield server, Client(server.url, http)
        finally:
            await server.stop()


def ws_url(c: Client, path: str) -> str:
    return f"{c.url.replace('http', 'ws')}{path}"


async def token_for(server, name: str, ttl: float = 3600) -> str:
    account = await server.service.store.call(lambda conn: acct.get(conn, name))
    return acct.issue_token(server.service.token_key, account, ttl)[0]


async def closed_with(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> int | None:
    """The close code once the server closes the socket (frames before it are skipped)."""
    async with asyncio.timeout(timeout):
        async for _ in ws:
            pass
    return ws.close_code


async def test_tokens_only_in_the_header(served):
    server, c = served
    token = await token_for(server, "acme:lead-a")
    status, body = await c.call("GET", f"/v1/conversations?token={token}")
    assert status == 401 and body["error"] == "token_in_url", body
    async with c.http.get(ws_url(c, f"/v1/agents/ws?token={token}")) as r:
        assert r.status == 401 and (await r.json())["error"] == "token_in_url"
    assert (await c.call("GET", "/v1/conversations", token))[0] == 200


async def test_a_ticket_opens_one_socket_once(served):
    server, c = served
    token = await token_for(server, "acme:a01")
    status, body = await c.call("POST", "/v1/auth/ws-ticket", token)
    assert status == 200 and body["ticket"] and body["expires"] > 0
    ticket = body["ticket"]
    async with c.http.ws_connect(ws_url(c, f"/v1/agents/ws?ticket={ticket}")) as ws:
        hello = await ws.receive_json(timeout=5)
        assert hello["type"] == "hello" and hello["agent_id"] == "a-01"
    async with c.http.get(ws_url(c, f"/v1/agents/ws?ticket={ticket}")) as r:
        assert r.status == 401 and (await r.json())["error"] == "bad_ticket"
    # a ticket opens sockets only: an ordinary endpoint still wants the header
    ticket = (await c.call("POST", "/v1/auth/ws-ticket", token))[1]["ticket"]
    status, body = await c.call("GET", f"/v1/conversations?ticket={ticket}")
    assert status == 401
    # tickets expire
    tickets = server.runner.app[TICKETS]
    account = await server.service.store.call(lambda conn: acct.get(conn, "acme:a01"))
    old, _ = tickets.issue(account, 9e9, now=1000.0)
    async with c.http.get(ws_url(c, f"/v1/agents/ws?ticket={old}")) as r:
        assert r.status == 401


@pytest.mark.parametrize("header", ["Bearer 令牌", "Bearer abc.é", "Bearer \u00ff\u00fe.x", "Bearer " + "a" * 5000,
                                    "Bearer a.b.c", "Bearer ."])
async def test_malformed_tokens_are_401_not_500(served, header):
    server, c = served
    async with c.http.get(f"{c.url}/v1/conversations", headers={"Authorization": header.encode().decode("latin-1")}) as r:
        assert r.status == 401, await r.text()
        assert (await r.json())["error"] in ("bad_token", "missing_token")


async def test_invalid_utf8_in_a_token_is_401(served):
    server, c = served
    host, port = c.url.removeprefix("http://").split(":")
    raw = (b"GET /v1/conversations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xc3(.\x80\r\n"
           b"Connection: close\r\n\r\n")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(raw)
    await writer.drain()
    head = await asyncio.wait_for(reader.read(200), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 401") or head.startswith(b"HTTP/1.1 400"), head


@pytest.mark.parametrize("change", ["passwd", "disable", "remove", "expire"])
async def test_open_sockets_close_when_the_token_stops_being_valid(served, change):
    server, c = served
    ttl = 1.5 if change == "expire" else 3600
    agent_token = await token_for(server, "acme:a01", ttl)
    lead_token = await token_for(server, "acme:lead-a", ttl)
    agent = await c.http.ws_connect(ws_url(c, "/v1/agents/ws"), headers={"Authorization": f"Bearer {agent_token}"})
    feed = await c.http.ws_connect(ws_url(c, "/v1/supervisors/ws"), headers={"Authorization": f"Bearer {lead_token}"})
    assert (await agent.receive_json(timeout=5))["type"] == "hello"

    def apply(conn):
        for name in ("acme:a01", "acme:lead-a"):
            if change == "passwd":
                acct.passwd(conn, name, "another-pass")
            elif change == "disable":
                acct.set_disabled(conn, name, True)
            elif change == "remove":
                acct.remove(conn, name)

    if change != "expire":
        await server.service.store.call(apply)  # as `fenliu accounts …` would, from another process
    assert await closed_with(agent) == CLOSE_REVOKED
    assert await closed_with(feed) == CLOSE_REVOKED
    status, body = await c.call("GET", "/v1/conversations", agent_token)
    assert status == 401
    if change == "disable":
        status, body = await c.call("POST", "/v1/auth/login", json={"account": "acme:a01", "password": "pw-1234"})
        assert status in (401, 403), body
        await server.service.store.call(lambda conn: acct.set_disabled(conn, "acme:a01", False))
        assert await c.login("acme:a01")


async def test_a_broken_frame_closes_the_socket_with_a_reason(served, fenliu_logs):
    server, c = served
    token = await token_for(server, "acme:a01")
    for data, code in ((b"[" * 5000 + b"]" * 5000, 1008), (b'{"type":"reply","text":' + b"[" * 3000 + b"]" * 3000 + b"}", 1008),
                       (b"{not json", 1007)):
        ws = await c.http.ws_connect(ws_url(c, "/v1/agents/ws"), headers={"Authorization": f"Bearer {token}"})
        assert (await ws.receive_json(timeout=5))["type"] == "hello"
        await ws.send_bytes(data)
        assert await closed_with(ws) == code
    ws = await c.http.ws_connect(ws_url(c, "/v1/agents/ws"), headers={"Authorization": f"Bearer {token}"})
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    await ws.send_json({"type": "teleport", "ref": "x"})  # well-formed but unknown: answered, the socket stays
    r = await ws.receive_json(timeout=5)
    assert r["type"] == "result" and not r["ok"] and r["ref"] == "x"
    await ws.close()
    assert not [e for e in fenliu_logs if e.get("exc_info") or e.get("log_level") in ("error", "critical")], fenliu_logs


def test_metrics_ask_for_a_token_beyond_loopback(tmp_path, monkeypatch):
    from router.service.ops_api import _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.0.2.7") and not _is_loopback("::")


async def test_metrics_on_all_interfaces_need_the_token(tmp_path, monkeypatch):
    from router.service.server import Server
    from tests.router.serve_support import load

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("FENLIU_METRICS_TOKEN", raising=False)
    cfg = write_config(tmp_path)
    add_accounts(tmp_path / "fenliu.db")
    server = await Server.start(load(cfg), host="0.0.0.0", port=0)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{server.port}/metrics") as r:
                assert r.status == 401 and "FENLIU_METRICS_TOKEN" in (await r.json())["message"]
            monkeypatch.setenv("FENLIU_METRICS_TOKEN", "m-secret")
            async with http.get(f"http://127.0.0.1:{server.port}/metrics", headers={"Authorization": "Bearer m-secret"}) as r:
                assert r.status == 200
            async with http.get(f"http://127.0.0.1:{server.port}/metrics", headers={"Authorization": "Bearer 错"}) as r:
                assert r.status == 401
    finally:
        await server.stop()
