"""Strategies keep their meaning across instances: round robin continues from the shared claim
order when another instance takes over a shop, a returning buyer gets their last agent (sticky)
from the instance that routes the shop now, and least load compares each agent's load across
all instances."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.redis.support import (
    PASSWORD,
    Instances,
    check_claim_log,
    claim_log,
    claims_applied,
    decisions,
    owners,
    routed_shards,
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
            async with http.ws_connect(f"{c.url.replace('http', 'ws')}/v1/agents/ws", headers={"Authorization": f"Bearer {token}"}) as ws:
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


async def test_least_load_counts_the_load_an_agent_carries_on_other_instances(tmp_path, shared_redis):  # noqa: F811
    """``a`` holds two conversations of shop ``one``, routed by the instance that owns its shard;
    the other instance routes shop ``two`` (served by ``a`` and ``b``), where ``a`` holds nothing
    and ``b`` one conversation. A new conversation of shop ``two`` goes to ``b``, the agent with
    the lower load across instances (2 against 1), not to ``a``, idle in that instance's shards."""
    r, prefix = shared_redis
    one, two = "shop-0", "shop-4"  # crc32 % 2: shards 0 and 1
    cfg = write_config(tmp_path, prefix, shops={one: "FENLIU_TEST_SECRET_A", two: "FENLIU_TEST_SECRET_A"},
                       agents=[{"id": "a", "shops": [one, two], "cap": 5}, {"id": "b", "shops": [two], "cap": 5}],
                       shards=2, strategy="least_load")
    for a in ("a", "b"):
        r.hset(f"{prefix}:agent:{a}", "status", "online")
    agent_of = lambda: {d["d"]["msg_id"]: d["d"]["agent_id"] for d in decisions(r, prefix)}
    nodes = Instances(cfg, tmp_path, 2, ["a", "b"])
    try:
        await nodes.healthy()
        await wait_for(lambda: None not in owners(r, prefix, 2).values(), 15, "both shards to have an owner")
        async with asyncio.timeout(15):
            while sorted(map(len, await routed_shards(nodes.urls))) != [1, 1]:
                await asyncio.sleep(0.1)
        routed_by = {n: next(i for i, s in enumerate(await routed_shards(nodes.urls)) if n in s) for n in (0, 1)}
        assert routed_by[0] != routed_by[1]
        async with aiohttp.ClientSession() as http:
            first, second = Client(nodes.urls[routed_by[0]], http), Client(nodes.urls[routed_by[1]], http)

            async def post(c: Client, shop: str, msg_id: str, buyer: str) -> str | None:
                status, body = await c.post_messages(shop, [message(msg_id, buyer, shop)], secret=SECRET_A)
                assert status == 202, body
                await wait_for(lambda: msg_id in agent_of(), 10, f"{msg_id} decided")
                await claims_applied(nodes.urls, r, prefix)
                return agent_of()[msg_id]

            assert await post(first, one, "m-1", "x-1") == "a"
            assert await post(first, one, "m-2", "x-2") == "a"
            assert await post(second, two, "m-3", "y-1") == "b"
            assert await post(second, two, "m-4", "y-2") == "b", "least_load must count a's conversations elsewhere"
    finally:
        nodes.stop()
    by = {d["d"]["msg_id"]: d["by"] for d in decisions(r, prefix)}
    assert by["m-1"] == by["m-2"] != by["m-3"] == by["m-4"]
    assert check_claim_log(claim_log(r, prefix), {"a": 5, "b": 5}) == {"a": 2, "b": 2}
