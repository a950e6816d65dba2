"""Takeover and outage, deterministically: entries left pending by a dead consumer and a claim
no committed state explains are recovered by the next owner; with Redis unreachable, ingest
answers 503 with Retry-After and acknowledges nothing it has not stored."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import aiohttp
import msgspec
import pytest

from router.core.models import Conversation
from router.core.signing import SIGNATURE_HEADER, sign
from tests.redis.support import (
    Instances,
    check_claim_log,
    claim_log,
    decisions,
    owners,
    wait_for,
    write_config,
)
from tests.router.serve_support import SECRET_A, Client, free_port, message

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]


async def test_new_owner_routes_pending_entries_first_and_releases_orphan_claims(tmp_path, shared_redis):  # noqa: F811
    """A dead owner left: one entry pending, one unread; a claim without committed state
    (``b-lost``); a committed assignment whose claim was released but not committed (``b-kept``)."""
    r, prefix = shared_redis
    cfg = write_config(tmp_path, prefix, shops={"s": "FENLIU_TEST_SECRET_A"},
                       agents=[{"id": "solo", "shops": ["*"], "cap": 3}], shards=1)
    stream = f"{prefix}:in:0"
    r.xgroup_create(stream, "routers", id="0", mkstream=True)
    for i in (1, 2):
        r.set(f"{prefix}:seen:s:m-{i}", 1)
        r.xadd(stream, {"k": "m", "b": msgspec.json.encode(message(f"m-{i}", f"b-{i}", "s"))})
    r.xreadgroup("routers", "ghost", {stream: ">"}, count=1)
    assert r.xpending(stream, "routers")["pending"] == 1
    r.hset(f"{prefix}:agent:solo", mapping={"status": "online", "load": 1, "assigned": 1})
    r.hset(f"{prefix}:owners:0", "s:b-lost", "solo")
    r.sadd(f"{prefix}:held:solo", "s:b-lost")
    r.xadd(f"{prefix}:claims", {"op": "claim", "agent": "solo", "conv": "s:b-lost", "load": 1, "cap": 3, "by": "ghost"})
    kept = Conversation("s:b-kept", "s", "b-kept", time.time(), state="assigned", agent_id="solo", skill="presale")
    r.hset(f"{prefix}:convs:0", "s:b-kept", msgspec.json.encode(kept))

    nodes = Instances(cfg, tmp_path, 1, ["solo"])
    try:
        await nodes.healthy()
        await wait_for(lambda: len(decisions(r, prefix)) >= 2, 20, "both messages decided")
        own = [d["d"] for d in decisions(r, prefix)]
        assert [(d["msg_id"], d["action"]) for d in own] == [("m-1", "assigned"), ("m-2", "assigned")]
        log = claim_log(r, prefix)
        assert [(e["op"], e["conv"], e.get("reason")) for e in log[1:]] == [
            ("release", "s:b-lost", "orphan"), ("claim", "s:b-kept", None), ("claim", "s:b-1", None),
            ("claim", "s:b-2", None)]
        assert check_claim_log(log, {"solo": 3}) == {"solo": 3}
        assert r.xpending(stream, "routers")["pending"] == 0
        async with aiohttp.ClientSession() as http:
            status, body = await Client(nodes.urls[0], http).post_messages("s", [message("m-1", "b-1", "s")], secret=SECRET_A)
        assert (status, body["accepted"], body["duplicates"]) == (202, 0, 1)
    finally:
        nodes.stop()
    assert len(decisions(r, prefix)) == 2


class _Proxy:
    """A loopback TCP proxy to Redis that can be cut, so one server loses its Redis."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers |= {writer, up_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        self.writers.clear()
        await self.server.wait_closed()


async def test_a_full_backlog_means_503_and_nothing_stored(tmp_path, shared_redis):  # noqa: F811
    r, prefix = shared_redis
    cfg = write_config(tmp_path, prefix, shops={"s": "FENLIU_TEST_SECRET_A"},
                       agents=[{"id": "solo", "shops": ["*"], "cap": 2}], shards=1, queue_max=5)
    nodes = Instances(cfg, tmp_path, 1, ["solo"])
    try:
        await nodes.healthy()
        async with aiohttp.ClientSession() as http:
            c = Client(nodes.urls[0], http)
            status, body = await c.post_messages("s", [message(f"m-{i}", f"b-{i}", "s") for i in range(6)], secret=SECRET_A)
            assert status == 503 and "waiting to be routed" in body["message"], body
            assert r.xlen(f"{prefix}:in:0") == 0 and r.zscore(f"{prefix}:dedupe:s", "m-0") is None
            status, body = await c.post_messages("s", [message(f"m-{i}", f"b-{i}", "s") for i in range(5)], secret=SECRET_A)
            assert (status, body["accepted"]) == (202, 5)
    finally:
        nodes.stop()


async def test_redis_unreachable_means_503_and_nothing_acknowledged_is_lost(tmp_path, shared_redis):  # noqa: F811
    r, prefix = shared_redis
    proxy = _Proxy(r.connection_pool.connection_kwargs.get("port", 6379))
    await proxy.start()
    cfg = write_config(tmp_path, prefix, shops={"s": "FENLIU_TEST_SECRET_A"},
                       agents=[{"id": "solo", "shops": ["*"], "cap": 2}], shards=1)
    toml = cfg / "fenliu.toml"
    toml.write_text("\n".join(f'redis_url = "redis://127.0.0.1:{proxy.port}/0"' if line.startswith("redis_url")
                              else line for line in toml.read_text().splitlines()))
    nodes = Instances(cfg, tmp_path, 1, ["solo"])
    routed = lambda: [d["d"]["msg_id"] for d in decisions(r, prefix)]
    try:
        await nodes.healthy()
        async with aiohttp.ClientSession() as http:
            c = Client(nodes.urls[0], http)
            status, _ = await c.post_messages("s", [message("m-1", "b-1", "s")], secret=SECRET_A)
            assert status == 202
            await wait_for(lambda: routed() == ["m-1"], 10, "m-1 decided")
            await proxy.cut()
            body = msgspec.json.encode([message("m-2", "b-2", "s")])
            async with http.post(f"{c.url}/v1/shops/s/messages", data=body,
                                 headers={SIGNATURE_HEADER: sign(SECRET_A.encode(), body)}) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "1"
                assert "storage unavailable" in (await resp.json())["message"]
            assert r.zscore(f"{prefix}:dedupe:s", "m-2") is None
            assert r.xlen(f"{prefix}:in:0") == 0
            await proxy.start()
            async with asyncio.timeout(15):
                while (await c.post_messages("s", [message("m-2", "b-2", "s")], secret=SECRET_A))[0] != 202:
                    await asyncio.sleep(0.2)
            await wait_for(lambda: routed() == ["m-1", "m-2"], 15, "m-2 decided once Redis is back")
    finally:
        await asyncio.to_thread(nodes.stop)
        with contextlib.suppress(Exception):
            await proxy.cut()


async def test_a_late_instance_gets_its_fair_share_and_nothing_is_routed_twice(tmp_path, shared_redis):  # noqa: F811
    r, prefix = shared_redis
    shops = {f"shop-{i}": "FENLIU_TEST_SECRET_A" for i in range(8)}
    cfg = write_config(tmp_path, prefix, shops=shops, agents=[{"id": "solo", "shops": ["*"], "cap": 1000}], shards=4)
    r.hset(f"{prefix}:agent:solo", "status", "online")
    first = Instances(cfg, tmp_path / "first", 1, ["solo"])
    second = None
    sent: list[str] = []
    try:
        await first.healthy()
        await wait_for(lambda: None not in owners(r, prefix, 4).values(), 15, "the first instance to own every shard")
        async with aiohttp.ClientSession() as http:
            c = Client(first.urls[0], http)

            async def post(tag: str) -> None:
                for i, shop in enumerate(shops):
                    batch = [message(f"{tag}-{i}-{k}", f"b-{k}", shop) for k in range(3)]
                    status, _ = await c.post_messages(shop, batch, secret=SECRET_A)
                    assert status == 202
                    sent.extend(m["msg_id"] for m in batch)

            await post("before")
            second = Instances(cfg, tmp_path / "second", 1, ["solo"])
            await second.healthy()
            await wait_for(lambda: sorted(Counter(owners(r, prefix, 4).values()).values()) == [2, 2], 20,
                           "two shards each")
            await post("after")
        await wait_for(lambda: len(decisions(r, prefix)) >= len(sent), 15, "every message decided")
        per_msg = Counter(d["d"]["msg_id"] for d in decisions(r, prefix))
        assert set(per_msg) == set(sent) and set(per_msg.values()) == {1}
        assert check_claim_log(claim_log(r, prefix), {"solo": 1000}) == {"solo": len(shops) * 3}
        assert len({d["by"] for d in decisions(r, prefix)}) == 2
    finally:
        first.stop()
        if second is not None:
            second.stop()
