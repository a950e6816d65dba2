"""After a SIGKILL, the instance that takes the shard over loads its open conversations' history
from PostgreSQL, so the ``assigned`` frames it sends carry what the dead owner remembered
(issue 21)."""

from __future__ import annotations

import os
import signal

import aiohttp
import pytest

from router.storage.redis.keys import shard_of
from tests.pg.support import PG_PASSWORD, add_accounts, next_frame, Platform, request, write_pg_config
from tests.redis.support import Instances, owners, shared_redis, shops_per_shard, wait_for  # noqa: F401 - shared_redis: a fixture
from tests.router.serve_support import SECRET_A, Client, message

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]


async def test_the_new_owner_sends_the_history_after_a_sigkill(tmp_path, shared_redis, pg_url):  # noqa: F811
    r, prefix = shared_redis
    shops = shops_per_shard(2)
    platform = Platform()
    await platform.start()
    cfg = write_pg_config(tmp_path, prefix, pg_url, platform.url, shops=shops, agents=["x1", "x2"], shards=2, cap=5)
    add_accounts(cfg, ["x1", "x2"])
    nodes = Instances(cfg, tmp_path, 2, ["x1", "x2"])
    try:
        await nodes.healthy()
        await wait_for(lambda: len(set(owners(r, prefix, 2).values()) - {None}) == 2, 20, "each instance to own a shard")
        async with aiohttp.ClientSession() as http:
            clients = [Client(u, http) for u in nodes.urls]
            ids = []
            for client in clients:
                st, health = await client.call("GET", "/healthz")
                ids.append(health["instance"])
            shop = shops[0]
            n = shard_of(shop, 2)
            victim = ids.index(owners(r, prefix, 2)[n])
            survivor = clients[1 - victim]
            sockets = {}
            for aid in ("x1", "x2"):  # both on the survivor
                token = await survivor.login(f"ops:{aid}", PG_PASSWORD)
                sockets[aid] = await http.ws_connect(f"{survivor.url.replace('http', 'ws')}/v1/agents/ws",
                                                     headers={"Authorization": f"Bearer {token}"})
                await next_frame(sockets[aid], "hello")
            cid = f"{shop}:buyer-1"
            st, body = await survivor.post_messages(shop, [message("m1", "buyer-1", shop, text="请问发货了吗")], secret=SECRET_A)
            assert st == 202, body
            await wait_for(lambda: r.hget(f"{prefix}:owners:{n}", cid) is not None, 10, "the conversation claimed")
            holder = r.hget(f"{prefix}:owners:{n}", cid).decode()
            other = "x2" if holder == "x1" else "x1"
            await next_frame(sockets[holder], "assigned", conversation_id=cid)
            assert (await request(sockets[holder], {"type": "accept", "conversation_id": cid}, "a"))["ok"]
            assert (await request(sockets[holder], {"type": "reply", "conversation_id": cid, "text": "今天下午发货"}, "r"))["ok"]
            st, body = await survivor.post_messages(shop, [message("m2", "buyer-1", shop, text="好的谢谢")], secret=SECRET_A)
            assert st == 202, body
            await wait_for(lambda: r.xlen(f"{prefix}:in:{n}") == 0, 10, "the owner to route the second message")

            os.kill(nodes.procs[victim].pid, signal.SIGKILL)
            nodes.procs[victim].wait(timeout=10)
            await wait_for(lambda: owners(r, prefix, 2) == {0: ids[1 - victim], 1: ids[1 - victim]}, 20,
                           "the survivor to take the shard over")
            for attempt in range(50):  # the adoption finishes shortly after the lease is taken
                moved = await request(sockets[holder], {"type": "transfer", "conversation_id": cid, "to_agent": other},
                                       f"t{attempt}")
                if moved["ok"]:
                    break
            assert moved["ok"], moved
            frame = await next_frame(sockets[other], "assigned", conversation_id=cid)
            assert [(h["who"], h["text"]) for h in frame["history"]] == [
                ("buyer", "请问发货了吗"), ("agent", "今天下午发货"), ("buyer", "好的谢谢")], frame["history"]
            for ws in sockets.values():
                await ws.close()
    finally:
        nodes.stop()
        await platform.stop()
