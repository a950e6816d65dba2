"""Strategies keep their meaning across instances: round robin continues from the shared claim
order when another instance takes over a shop, and a returning buyer gets their last agent
(sticky) from the instance that routes the shop now."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.redis.support import (
    PASSWORD,
    Instances,
    decisions,
    owners,
    shared_redis,  # noqa: F401 - fixture
    wait_for,
    write_config,
)
from tests.router.serve_support import SECRET_A, Client, message

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]

AGENTS = ["a", "b", "c"]


async def test_round_robin_and_sticky_continue_on_another_instance(tmp_path, shared_redis):  # noqa: F811
    r, prefix = shared_redis
    cfg = write_config(tmp_path, prefix, shops={"s": "FENLIU_TEST_SECRET_A"},
                       agents=[{"id": a, "shops": ["*"], "cap": 5} for a in AGENTS], shards=1, sticky_hours=24)
    for a in AGENTS:
        r.hset(f"{prefix}:agent:{a}", "status", "online")
    assigned = lambda: {d["d"]["msg_id"]: (d["d"]["agent_id"], d["d"]["flags"]) for d in decisions(r, prefix)}

    async def post(c: Client, msg_id: str, buyer: str) -> tuple[str, list[str]]:
        status, body = await c.post_messages("s", [message(msg_id, buyer, "s")], secret=SECRET_A)
        assert status == 202, body
        await wait_for(lambda: msg_id in assigned(), 10, f"{msg_id} decided")
        return assigned()[msg_id]

    first = Instances(cfg, tmp_path / "first", 1, AGENTS)
    try:
        await first.healthy()
        await wait_for(lambda: owners(r, prefix, 1)[0] is not None, 15, "the shard to have an owner")
        async with aiohttp.ClientSession() as http:
            c = Client(first.urls[0], http)
            agent, _ = await post(c, "m-1", "b-1")
            token = await c.login(f"ops:{agent}", PASSWORD)
            async with http.ws_connect(f"{c.url.replace('http', 'ws')}/v1/agents/ws?token={token}") as ws:
                for op in ("accept", "close"):
                    await ws.send_json({"type": op, "conversation_id": "s:b-1", "ref": op})
                    async with asyncio.timeout(10):
                        while (frame := json.loads((await ws.receive()).data))["type"] != "result":
                            pass
                    assert frame["ok"] and frame["ref"] == op, frame
            order = [agent] + [(await post(c, f"m-{i}", f"b-{i}"))[0] for i in range(2, 6)]
    finally:
        first.stop()
    assert order[:3] == sorted(set(order[:3]), key=order.index) and len(set(order[:3])) == 3
    assert order[3:] == order[:2]
    least_recent = order[2]

    second = Instances(cfg, tmp_path / "second", 1, AGENTS)
    try:
        await second.healthy()
        async with aiohttp.ClientSession() as http:
            c = Client(second.urls[0], http)
            assert await post(c, "m-back", "b-1") == (order[0], ["sticky"])
            assert (await post(c, "m-new", "b-new"))[0] == least_recent
    finally:
        second.stop()
