"""Property-based fuzz of every WebSocket frame type, on a real server: whatever an agent's or a
supervisor's socket sends, the server answers with a ``result`` frame or closes with 1007/1008,
never with anything else, and logs no error or traceback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from router.storage import accounts as acct
from tests.router.serve_support import ENV, Client, add_accounts, start_server, write_config

FRAME_TYPES = ("accept", "reply", "transfer", "close", "status", "note")
CIDS = ("pdd-a:b-1", "tb-b:b-1", "", ":", "pdd-a:", "x" * 300, "小店:买家", "pdd-a:b-1\x00")

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False), st.text(max_size=40), st.sampled_from(CIDS))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


#: The deepest frame ``frames`` draws: past any decoder's nesting limit, so it must close 1008.
DEEPEST = b'{"type":"note","conversation_id":' + b"[" * 5000 + b"]" * 5000 + b"}"


@st.composite
def frames(draw: Any) -> bytes:
    kind = draw(st.sampled_from(("typed", "typed", "typed", "deep", "bytes", "huge_number")))
    if kind == "deep":
        depth = draw(st.integers(min_value=100, max_value=5000))
        inner = b"[" * depth + b"]" * depth
        return b'{"type":"' + draw(st.sampled_from(FRAME_TYPES)).encode() + b'","conversation_id":' + inner + b"}"
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "huge_number":
        return b'{"type":"note","conversation_id":"pdd-a:b-1","text":"x","ref":' + b"9" * draw(st.integers(300, 5000)) + b"}"
    frame: dict[str, Any] = {"type": draw(st.one_of(st.sampled_from(FRAME_TYPES), st.text(max_size=10)))}
    for key in draw(st.lists(st.sampled_from(("conversation_id", "text", "to_agent", "to_skill", "status", "tags",
                                               "ref", "extra")), max_size=5, unique=True)):
        frame[key] = draw(st.one_of(values, st.sampled_from(CIDS), st.sampled_from(("online", "break", "a-01", "presale"))))
    return json.dumps(frame, ensure_ascii=draw(st.booleans())).encode()


@pytest.mark.slow
def test_no_frame_breaks_a_socket(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = write_config(tmp_path)
    add_accounts(tmp_path / "fenliu.db")
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(start_server(cfg))
    http = loop.run_until_complete(_session())
    c = Client(server.url, http)
    tokens = {}
    for name in ("acme:a01", "acme:lead-a"):
        account = loop.run_until_complete(server.service.store.call(lambda conn, n=name: acct.get(conn, n)))
        tokens[name] = acct.issue_token(server.service.token_key, account, 3600)[0]
    loop.run_until_complete(c.post_messages("pdd-a", {"shop_id": "pdd-a", "msg_id": "m-1", "buyer_id": "b-1", "text": "在吗"}))
    outcomes: dict[str, int] = {}
    import structlog

    with structlog.testing.capture_logs() as logs:

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(data=frames(), path=st.sampled_from(("/v1/agents/ws", "/v1/supervisors/ws")))
        @example(data=DEEPEST, path="/v1/agents/ws")  # the search alone may draw no frame that deep
        def one(data: bytes, path: str) -> None:
            token = tokens["acme:a01" if path == "/v1/agents/ws" else "acme:lead-a"]
            outcome = loop.run_until_complete(_send(c, path, token, data))
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            assert outcome in ("result", "closed 1007", "closed 1008", "ignored"), (outcome, data[:200])

        try:
            one()
        finally:
            loop.run_until_complete(http.close())
            loop.run_until_complete(server.stop())
            loop.close()
    bad = [e for e in logs if e.get("exc_info") or e.get("log_level") in ("error", "critical")]
    assert not bad, bad[:3]
    assert outcomes.get("result", 0) > 10 and outcomes.get("closed 1008", 0) > 0, outcomes


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


async def _send(c: Client, path: str, token: str, data: bytes) -> str:
    """What the server does with one frame: answers it, closes (with which code), or, on the
    supervisors' feed, which takes no commands, ignores it."""
    ws = await c.http.ws_connect(f"{c.url.replace('http', 'ws')}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        first = await ws.receive(timeout=5)
        assert first.type == aiohttp.WSMsgType.TEXT, first
        await ws.send_bytes(data)
        async with asyncio.timeout(3 if path == "/v1/agents/ws" else 0.3):
            while True:
                msg = await ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    return f"closed {ws.close_code}"
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return f"unexpected {msg.type}"
                if json.loads(msg.data).get("type") == "result":
                    return "result"
    except TimeoutError:
        return "ignored" if path == "/v1/supervisors/ws" else "no answer"
    finally:
        await ws.close()
