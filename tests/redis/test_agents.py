"""An agent's WebSocket may be on any instance: a conversation routed by another instance
reaches it, every instance shows the agent's shared load, and connecting again elsewhere
replaces the older connection."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.redis.support import (
    PASSWORD,
    Instances,
    owners,
    wait_for,
    write_config,
)
from tests.router.serve_support import SECRET_A, Client, message

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]


async def _frame(ws: aiohttp.ClientWebSocketResponse, type_: str) -> dict:
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                return {"type": "ended", "code": msg.data if msg.type == aiohttp.WSMsgType.CLOSE else (msg.type, ws.close_code)}
            frame = json.loads(msg.data)
            if frame["type"] == type_:
                return frame


async def test_frames_cross_instances_and_a_new_connection_replaces_the_old(tmp_path, shared_redis):  # noqa: F811
    r, prefix = shared_redis
    cfg = write_config(tmp_path, prefix, shops={"s": "FENLIU_TEST_SECRET_A"},
                       agents=[{"id": "solo", "shops": ["*"], "cap": 3}], shards=1)
    nodes = Instances(cfg, tmp_path, 2, ["solo"])
    try:
        await nodes.healthy()
        await wait_for(lambda: owners(r, prefix, 1)[0] is not None, 15, "the shard to have an owner")
        router_pid = int(owners(r, prefix, 1)[0].rsplit("-", 2)[1])
        other = next(i for i, p in enumerate(nodes.procs) if p.pid != router_pid)
        async with aiohttp.ClientSession() as http:
            clients = [Client(u, http) for u in nodes.urls]
            token = await clients[other].login("ops:solo", PASSWORD)
            ws_url = f"{clients[other].url.replace('http', 'ws')}/v1/agents/ws"
            async with http.ws_connect(ws_url, headers={"Authorization": f"Bearer {token}"}) as ws:
                assert (await _frame(ws, "hello"))["agent_id"] == "solo"
                await wait_for(lambda: r.hget(f"{prefix}:agent:solo", "status") == b"online", 10, "solo online")
                status, _ = await clients[1 - other].post_messages("s", [message("m-1", "b-1", "s")], secret=SECRET_A)
                assert status == 202
                assigned = await _frame(ws, "assigned")
                assert assigned["conversation_id"] == "s:b-1"
                await ws.send_json({"type": "accept", "conversation_id": "s:b-1", "ref": "a"})
                assert (await _frame(ws, "result"))["ok"]
                admin = await clients[other].login("ops", PASSWORD)
                _, body = await clients[other].call("GET", "/v1/agents", admin)
                solo = body["agents"][0]
                assert (solo["status"], solo["load"], solo["conversations"], solo["connected"]) == \
                    ("online", 1, ["s:b-1"], True), solo

                token2 = await clients[1 - other].login("ops:solo", PASSWORD)
                async with http.ws_connect(f"{clients[1 - other].url.replace('http', 'ws')}/v1/agents/ws", headers={"Authorization": f"Bearer {token2}"}) as ws2:
                    hello = await _frame(ws2, "hello")
                    assert [c["conversation_id"] for c in hello["conversations"]] == ["s:b-1"]
                    assert hello["conversations"][0]["state"] == "assigned"
                    ended = await _frame(ws, "never")
                    assert ended == {"type": "ended", "code": 4000}
                    status, _ = await clients[other].post_messages("s", [message("m-2", "b-1", "s")], secret=SECRET_A)
                    assert status == 202
                    got = await _frame(ws2, "message")
                    assert (got["conversation_id"], got["msg_id"]) == ("s:b-1", "m-2")
    finally:
        nodes.stop()
