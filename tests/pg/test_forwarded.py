"""An agent behind a load balancer closes and transfers from whichever instance holds its socket:
the request travels to the conversation's owner with the asker's account, and the owner checks it
as a local request is checked (issue 21)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgspec
import pytest

from adapters import OrderContext
from router.core.models import AfterSale, Order
from router.storage.pg.records import PgRecords
from router.storage.redis.keys import shard_of
from tests.conftest import run_fenliu
from tests.pg.support import PG_PASSWORD, add_accounts, next_frame, Platform, request, write_pg_config
from tests.redis.support import Instances, owners, shared_redis, shops_per_shard, wait_for  # noqa: F401 - shared_redis: a fixture
from tests.router.serve_support import SECRET_A, Client, message

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]


async def test_close_and_transfer_from_an_instance_that_does_not_route(tmp_path, shared_redis, pg_url):  # noqa: F811
    r, prefix = shared_redis
    shops = shops_per_shard(2)
    platform = Platform()
    await platform.start()
    cfg = write_pg_config(tmp_path, prefix, pg_url, platform.url, shops=shops, agents=["x1", "x2"], shards=2, cap=5)
    add_accounts(cfg, ["x1", "x2"])
    for name, extra in [("ops:sup", ["--role", "supervisor", "--shops", shops[1]]),
                        ("ops:lim", ["--role", "agent", "--agent", "x1", "--shops", shops[1]])]:
        out = run_fenliu("accounts", "add", name, *extra, "--password-stdin", "--config", str(cfg), input=PG_PASSWORD + "\n")
        assert out.returncode == 0, out.stderr
    nodes = Instances(cfg, tmp_path, 2, ["x1", "x2"])
    try:
        await nodes.healthy()
        await wait_for(lambda: len(set(owners(r, prefix, 2).values()) - {None}) == 2, 20, "each instance to own a shard")
        async with aiohttp.ClientSession() as http:
            clients = [Client(u, http) for u in nodes.urls]
            names = {}
            for client in clients:
                st, health = await client.call("GET", "/healthz")
                names[health["instance"]] = client
            shop = shops[0]
            router_of = names[owners(r, prefix, 2)[shard_of(shop, 2)]]
            asker = next(c for c in clients if c is not router_of)  # holds the sockets, routes the other shard
            admin = await asker.login("ops", PG_PASSWORD)
            sockets = {}
            for aid in ("x1", "x2"):
                token = await asker.login(f"ops:{aid}", PG_PASSWORD)
                sockets[aid] = await http.ws_connect(f"{asker.url.replace('http', 'ws')}/v1/agents/ws",
                                                     headers={"Authorization": f"Bearer {token}"})
                await next_frame(sockets[aid], "hello")
            await wait_for(lambda: all(r.hget(f"{prefix}:agent:{a}", "status") == b"online" for a in ("x1", "x2")),
                           10, "both agents online")
            await asyncio.sleep(0.3)  # the routing instance reads the statuses from the control stream

            async def opened(buyer: str) -> tuple[str, str]:
                """A conversation routed by ``router_of``, assigned to x1 or x2: (id, holder)."""
                st, body = await router_of.post_messages(shop, [message(f"m-{buyer}", buyer, shop)], secret=SECRET_A)
                assert st == 202, body
                cid = f"{shop}:{buyer}"
                await wait_for(lambda: r.hget(f"{prefix}:owners:{shard_of(shop, 2)}", cid) is not None,
                               10, "the conversation claimed")
                holder = r.hget(f"{prefix}:owners:{shard_of(shop, 2)}", cid).decode()
                await next_frame(sockets[holder], "assigned", conversation_id=cid)
                return cid, holder

            # over the WebSocket on the instance that does not route the conversation
            cid, holder = await opened("b1")
            other = "x2" if holder == "x1" else "x1"
            ws, ws_other = sockets[holder], sockets[other]
            assert (await request(ws, {"type": "accept", "conversation_id": cid}, "a1"))["ok"]
            refused = await request(ws_other, {"type": "close", "conversation_id": cid}, "c0")
            assert not refused["ok"] and refused["reason"] == f"conversation {cid!r} is not yours", refused
            moved = await request(ws, {"type": "transfer", "conversation_id": cid, "to_agent": other}, "t1")
            assert moved["ok"], moved
            await next_frame(ws_other, "assigned", conversation_id=cid)
            assert (await request(ws_other, {"type": "accept", "conversation_id": cid}, "a2"))["ok"]
            closed = await request(ws_other, {"type": "close", "conversation_id": cid}, "c1")
            assert closed["ok"], closed  # (its closed frame may come before or after the result)
            gone = await request(ws_other, {"type": "close", "conversation_id": cid}, "c2")
            assert not gone["ok"] and gone["reason"] == f"no open conversation {cid!r}", gone

            # POST /v1/conversations/{cid}/transfer through the instance that does not route it
            cid, holder = await opened("b2")
            other = "x2" if holder == "x1" else "x1"
            path = f"/v1/conversations/{cid}/transfer"
            st, body = await asker.call("POST", path, admin, json={"to_agent": other})
            assert st == 200 and body["conversation_id"] == cid, body
            await next_frame(sockets[other], "assigned", conversation_id=cid)
            not_holder = await asker.login(f"ops:{holder}", PG_PASSWORD)  # an agent moving another's conversation
            st, body = await asker.call("POST", path, not_holder, json={"to_agent": holder})
            assert (st, body["error"]) == (403, "forbidden"), body
            sup = await asker.login("ops:sup", PG_PASSWORD)  # a supervisor of the other shop only
            st, body = await asker.call("POST", path, sup, json={"to_agent": holder})
            assert (st, body["error"]) == (403, "shop_forbidden"), body
            st, body = await asker.call("POST", f"/v1/conversations/{shop}:nobody/transfer", admin, json={"to_skill": "presale"})
            assert (st, body["error"]) == (404, "not_found"), body
            st, body = await asker.call("POST", path, admin, json={"to_agent": "nobody"})
            assert (st, body["error"]) == (404, "unknown_agent"), body

            # the owner applies the asker's scope itself: a request whose account may not see the
            # shop is refused there with the same code, whatever the asking instance let through
            req = "raw-1"
            r.xadd(f"{prefix}:in:{shard_of(shop, 2)}", {
                "k": "e", "b": msgspec.json.encode({"type": "close", "conversation_id": cid}), "req": req,
                "who": other, "inst": "test-asker",
                "as": msgspec.json.encode({"account": "ops:sup", "role": "supervisor", "shops": [shops[1]], "via": "http"})})
            found: list = []

            def answered() -> bool:
                found[:] = [msgspec.json.decode(f[b"d"]) for _, f in r.xrange(f"{prefix}:replies:test-asker")]
                return bool(found)

            await wait_for(answered, 10, "the owner's verdict")
            (verdict,) = found
            assert (verdict["req"], verdict["ok"], verdict["status"], verdict["code"]) == (req, False, 403, "shop_forbidden")
            # ... and an agent's socket limited to the other shop is refused before anything travels
            lim = await asker.login("ops:lim", PG_PASSWORD)
            async with http.ws_connect(f"{asker.url.replace('http', 'ws')}/v1/agents/ws",
                                       headers={"Authorization": f"Bearer {lim}"}) as limited:
                await next_frame(limited, "hello")
                refused = await request(limited, {"type": "close", "conversation_id": cid}, "c3")
                assert not refused["ok"] and refused["reason"] == "forbidden: that shop is not permitted to your account"
            st, view = await asker.call("GET", f"/v1/conversations/{cid}", admin)
            assert st == 200 and view["agent_id"] == other, view  # nothing refused moved it

            # the 售后 list shows the buyer's open conversation alike from both instances
            records = PgRecords(pg_url, instance="test", pool_size=1)
            await records.start()
            try:
                await records.record_story([OrderContext(shop, Order("o-9", "refund_requested"), cid.partition(":")[2],
                                                         aftersale=AfterSale("as-9", "requested"))], time.time())
            finally:
                await records.close()
            for client in (asker, router_of):
                st, body = await client.call("GET", "/v1/aftersales", admin)
                assert st == 200, body
                assert [(i["conversation_id"], i["conversation_state"], i["agent_id"]) for i in body["aftersales"]] == [
                    (cid, view["state"], other)], (client.url, body)
            for ws_ in sockets.values():
                await ws_.close()
    finally:
        nodes.stop()
        await platform.stop()
