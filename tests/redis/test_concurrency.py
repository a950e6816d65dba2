"""Many simultaneous new conversations for one agent of cap 3, through three instances whose
shards are routed by different processes: exactly three are assigned, the rest queued."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.redis.support import (
    PASSWORD,
    Instances,
    check_claim_log,
    claim_log,
    decisions,
    owners,
    routed_shards,
    shops_per_shard,
    wait_for,
    write_config,
)
from tests.router.serve_support import SECRET_A, Client, message

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]

SHARDS = 3


async def test_one_agent_cap_three_across_instances(tmp_path, shared_redis):  # noqa: F811
    r, prefix = shared_redis
    shops = shops_per_shard(SHARDS)
    cfg = write_config(tmp_path, prefix, shops={s: "FENLIU_TEST_SECRET_A" for s in shops},
                       agents=[{"id": "solo", "shops": ["*"], "cap": 3}], shards=SHARDS)
    nodes = Instances(cfg, tmp_path, 3, ["solo"])
    try:
        await nodes.healthy()
        await wait_for(lambda: None not in owners(r, prefix, SHARDS).values(), 20, "every shard to have an owner")
        async with asyncio.timeout(20):
            while sorted(map(len, await routed_shards(nodes.urls))) != [1, 1, 1]:
                await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as http:
            clients = [Client(u, http) for u in nodes.urls]
            token = await clients[0].login("ops", PASSWORD)
            status, body = await clients[0].call("PUT", "/v1/agents/solo/status", token, json={"status": "online"})
            assert status == 200, body

            async def online_everywhere() -> bool:
                for c in clients:
                    _, body = await c.call("GET", "/v1/agents", token if c is clients[0] else await c.login("ops", PASSWORD))
                    if body["agents"][0]["status"] != "online":
                        return False
                return True

            async with asyncio.timeout(10):
                while not await online_everywhere():
                    await asyncio.sleep(0.05)

            async def one(i: int) -> int:
                shop = shops[i % SHARDS]
                status, body = await clients[i % 3].post_messages(shop, [message(f"m-{i}", f"b-{i}", shop)], secret=SECRET_A)
                assert status == 202, body
                return body["accepted"]

            assert sum(await asyncio.gather(*(one(i) for i in range(30)))) == 30
        await wait_for(lambda: len(decisions(r, prefix)) >= 30, 30, "30 decisions")
        decided = decisions(r, prefix)
        own = [d["d"] for d in decided if d["d"]["msg_id"]]
        assert sorted(d["msg_id"] for d in own) == sorted(f"m-{i}" for i in range(30))
        actions = [d["action"] for d in own]
        assert actions.count("assigned") == 3 and actions.count("queued") == 27, actions
        assert not [d for d in decided if not d["d"]["msg_id"]], "nothing moved after the messages' own decisions"
        log = claim_log(r, prefix)
        assert [e["op"] for e in log] == ["claim"] * 3
        assert check_claim_log(log, {"solo": 3}) == {"solo": 3}
        assert int(r.hget(f"{prefix}:agent:solo", "load")) == 3
        routed_by = {d["by"] for d in decided}
        assert len(routed_by) == 3, f"expected every instance to route its shard, got {routed_by}"
    finally:
        nodes.stop()
