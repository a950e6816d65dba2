"""Ingest over Redis: one stream entry and a few commands per HTTP batch, and still exactly once.
A message id is a duplicate within its batch, in a later batch, and where an older version kept
it (``seen:{shop}:{msg_id}``); once its dedupe window ended it is accepted again and trimmed. The
backlog count the bound reads goes back to zero once everything is routed."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.redis.support import Instances, decisions, wait_for, write_config
from tests.router.serve_support import SECRET_A, Client, message

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]


async def test_each_message_id_is_accepted_once_per_window(tmp_path, shared_redis):  # noqa: F811
    r, prefix = shared_redis
    cfg = write_config(tmp_path, prefix, shops={"s": "FENLIU_TEST_SECRET_A"},
                       agents=[{"id": "solo", "shops": ["*"], "cap": 10}], shards=1)
    dedupe = f"{prefix}:dedupe:s"
    r.set(f"{prefix}:seen:s:m-old-version", 1)
    r.zadd(dedupe, {"m-expired": time.time() - 5, "m-stale": time.time() - 5})
    routed = lambda: [d["d"]["msg_id"] for d in decisions(r, prefix)]
    nodes = Instances(cfg, tmp_path, 1, ["solo"])
    try:
        await nodes.healthy()
        async with aiohttp.ClientSession() as http:
            c = Client(nodes.urls[0], http)

            async def post(*ids: str) -> tuple[int, int]:
                status, body = await c.post_messages("s", [message(i, f"b-{i}", "s") for i in ids], secret=SECRET_A)
                assert status == 202, body
                return body["accepted"], body["duplicates"]

            assert await post("m-1", "m-2", "m-1") == (2, 1)
            assert r.xlen(f"{prefix}:in:0") in (0, 1)
            assert await post("m-2", "m-3") == (1, 1)
            assert await post("m-old-version", "m-expired") == (1, 1)
            await wait_for(lambda: len(routed()) == 4, 15, "four messages decided")
            assert sorted(routed()) == ["m-1", "m-2", "m-3", "m-expired"]
            assert r.zscore(dedupe, "m-stale") is None, "ids whose window ended are trimmed"
            assert r.zscore(dedupe, "m-expired") > time.time() + 86400
            await wait_for(lambda: r.xlen(f"{prefix}:in:0") == 0, 10, "the routed entries deleted")
            assert int(r.get(f"{prefix}:backlog:0")) == 0
    finally:
        nodes.stop()


def test_a_batch_of_thousands_is_one_entry_and_deduped_whole(shared_redis):  # noqa: F811
    """Past Lua's unpack limit (a few thousand arguments): ``ingest.lua`` works in chunks."""
    import msgspec

    from router.storage.redis.keys import lua

    r, prefix = shared_redis
    ids = [f"m-{i}" for i in range(5000)]
    keys = [f"{prefix}:in:0", f"{prefix}:backlog:0", f"{prefix}:dedupe:s", *(f"{prefix}:seen:s:{i}" for i in ids)]
    args = [172800, 10**6, int(time.time()), len(ids), *ids, *(msgspec.json.encode(message(i, "b", "s")) for i in ids)]
    ingest = r.register_script(lua("ingest"))
    assert ingest(keys=keys, args=args) == [1] * len(ids)
    assert ingest(keys=keys, args=args) == [0] * len(ids)
    assert r.xlen(f"{prefix}:in:0") == 1 and r.zcard(f"{prefix}:dedupe:s") == len(ids)
    assert int(r.get(f"{prefix}:backlog:0")) == len(ids)
