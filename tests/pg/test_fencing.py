"""What keeps PostgreSQL's history true across a takeover: rows fenced by the shard's lease
epoch (an owner that lost its shard cannot overwrite the new owner's row), and ticks copied from
the fenced commit's stream once each, even when a copier dies between its write and its ack."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aredis

from router.core.models import Decision
from router.service.redis import ticks
from router.service.redis.ticks import TickCopier
from router.storage.pg.records import PgRecords
from router.storage.redis.keys import lua
from tests.redis.support import REDIS_URL, shared_redis  # noqa: F401 - a fixture

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


def _row(agent: str, fence: int) -> tuple:
    d = Decision("m1", "s1", "s1:b1", "assigned", agent_id=agent, cause="message")
    return ("message", "m:s1:m1", 100.0, "s1", "m1", "s1:b1", b"{}", [d], fence)


async def _history(records: PgRecords) -> list[tuple]:
    async with records.pool.connection() as conn:
        cur = await conn.execute("SELECT entry, kind, decisions, fence FROM history ORDER BY entry")
        return await cur.fetchall()


async def test_a_deposed_owner_cannot_overwrite_the_new_owners_row(pg_url: str) -> None:
    records = PgRecords(pg_url, instance="i0", pool_size=2)
    await records.start()
    try:
        await records.write_history([_row("old-owner", 1)])
        await records.write_history([_row("new-owner", 2)])  # the shard taken over and the entry routed again
        await records.write_history([_row("old-owner", 1)])  # the deposed owner's late write
        ((_, _, decisions, fence),) = await _history(records)
        assert (decisions[0]["agent_id"], fence) == ("new-owner", 2)
        await records.write_history([_row("new-owner-again", 2)])  # the same owner's retried batch
        ((_, _, decisions, _),) = await _history(records)
        assert decisions[0]["agent_id"] == "new-owner-again"
    finally:
        await records.close()


def test_every_new_lease_of_a_shard_has_a_higher_epoch(shared_redis) -> None:  # noqa: F811
    r, prefix = shared_redis
    take = r.register_script(lua("lease"))
    keys = [f"{prefix}:lease:0", f"{prefix}:epoch:0"]
    first = take(keys=keys, args=["a:1", 60_000])
    assert first == b"1:a:1"
    assert take(keys=keys, args=["b:1", 60_000]) is None  # held: nothing taken, the epoch unmoved
    r.delete(keys[0])  # expired
    assert take(keys=keys, args=["b:1", 60_000]) == b"2:b:1"


async def test_ticks_are_copied_once_even_when_a_copier_dies_before_its_ack(shared_redis, pg_url: str,  # noqa: F811
                                                                              monkeypatch) -> None:
    _, prefix = shared_redis
    key = f"{prefix}:ticks"
    monkeypatch.setattr(ticks, "IDLE_MS", 100)
    r = aredis.Redis.from_url(REDIS_URL)
    records = [PgRecords(pg_url, instance=f"i{i}", pool_size=2) for i in range(2)]
    for rec in records:
        await rec.start()
    dead, live = (TickCopier(r, key, f"i{i}", rec) for i, rec in enumerate(records))
    try:
        await dead.start()
        await live.start()  # the group exists already: no error
        ids = [await r.xadd(key, {"d": ticks.entry([Decision(f"t{i}", "s1", f"s1:b{i}", "queued", cause="reservation_timeout")], 100.0 + i)})
               for i in range(6)]
        # The first copier reads three, writes one of them and dies before acknowledging any.
        got = await r.xreadgroup(ticks.GROUP, "i0", {key: ">"}, count=3)
        eid, fields = got[0][1][0]
        await records[0].write_history([("tick", f"t:{eid.decode()}", 100.0, None, None, None, None,
                                         ticks._tick.decode(fields[b"d"]).ds, 0)])
        assert await live.copy() == 3  # the three nobody read
        await asyncio.sleep(0.2)
        assert await live.copy() == 3  # the dead copier's, once idle
        assert await live.copy() == 0
        rows = await _history(records[1])
        assert [entry for entry, *_ in rows] == sorted(f"t:{i.decode()}" for i in ids)
        assert {kind for _, kind, _, _ in rows} == {"tick"}
        assert await r.xlen(key) == 0 and (await r.xpending(key, ticks.GROUP))["pending"] == 0
    finally:
        for rec in records:
            await rec.close()
        await r.aclose()
