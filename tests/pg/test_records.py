"""The PostgreSQL records store on its own: accounts written by the command-line helpers and
read by every instance, outbox rows claimed once across instances, history rows replaced (not
added) when an input is routed again, notes kept when written through two instances at once."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.storage import accounts as acct
from router.core.models import Decision, Message
from router.storage.pg.compat import SyncStore
from router.storage.pg.outbox import CLAIM_S
from router.storage.pg.records import PgRecords

pytestmark = pytest.mark.anyio


async def _records(url: str, n: int) -> list[PgRecords]:
    out = [PgRecords(url, instance=f"i{i}", pool_size=4) for i in range(n)]
    await asyncio.gather(*(r.start() for r in out))  # migrations under the lock, all at once
    return out


async def test_accounts_created_once_are_read_by_every_instance(pg_url: str) -> None:
    store = SyncStore(pg_url)
    try:
        store.run_sync(lambda c: acct.add(c, "acme", "pw-acme", "admin", ("*",)))
        store.run_sync(lambda c: acct.add(c, "acme:xiaomei", "pw-xm", "agent", ("s1",)))
        with pytest.raises(acct.AccountError):
            store.run_sync(lambda c: acct.add(c, "acme", "pw-other", "admin", ("*",)))
        a, b = await _records(pg_url, 2)
        try:
            assert sorted(await a.accounts()) == sorted(await b.accounts()) == ["acme", "acme:xiaomei"]
            found = await asyncio.to_thread(b.lookup_blocking, "acme:xiaomei")
            assert found is not None and acct.check_password(found[1], "pw-xm")
            store.run_sync(lambda c: acct.set_disabled(c, "acme:xiaomei", True))
            book = await a.accounts()
            assert book["acme:xiaomei"].disabled and book["acme:xiaomei"].generation == 2
        finally:
            await asyncio.gather(a.close(), b.close())
    finally:
        store.close_sync()


async def test_outbox_rows_are_claimed_by_one_instance_each(pg_url: str) -> None:
    recs = await _records(pg_url, 3)
    try:
        ids = [await recs[0].outbox.add_reply("s1", f"s1:b{i}", f"b{i}", "a1", f"reply {i}", 1000.0 + i) for i in range(60)]
        claims = await asyncio.gather(*(r.outbox.claim_due(2000.0, limit=25) for r in recs for _ in range(2)))
        got = [item.id for claim in claims for item, _, _ in claim]
        assert not any(doubt for claim in claims for _, _, doubt in claim)  # never tried: nothing in doubt
        assert sorted(got) == ids  # every row claimed, none twice
        assert await recs[1].outbox.claim_due(2000.0 + 1) == []  # claims still held
        mine = [item.id for item, _, _ in claims[0]]
        for rid in mine:
            await recs[0].outbox.acked(rid, 2001.0)
            await recs[1].outbox.acked(rid, 2001.0)  # not its claim: changes nothing
        taken_over = await recs[2].outbox.claim_due(2000.0 + CLAIM_S + 1)  # the other claims expired (their sender "died")
        assert sorted(item.id for item, _, _ in taken_over) == sorted(set(ids) - set(mine))
        assert all(doubt for _, _, doubt in taken_over)  # their sender may have sent them: ask first
        assert await recs[0].outbox.pending() == len(ids) - len(mine)
    finally:
        for r in recs:
            await r.close()


def _message(i: int) -> tuple:
    msg = Message(msg_id=f"m{i}", shop_id="s1", buyer_id="b1", text=f"hello {i}", ts=100.0 + i)
    d = Decision(f"m{i}", "s1", "s1:b1", "queued", cause="message")
    from msgspec.json import encode as _encode

    return ("message", f"3:{i}-0", 100.0 + i, "s1", f"m{i}", "s1:b1", _encode(msg), [d], 1)


async def test_histories_of_a_shard_equal_each_conversations_without_what_is_routed_again(pg_url: str) -> None:
    """What a new owner loads for all the shard's conversations at once is what each
    conversation shows, less the inputs it routes again itself (the old owner's pending entries)."""
    (r,) = await _records(pg_url, 1)
    try:
        from msgspec.json import encode as _encode

        other = ("message", "m:s2:x", 150.0, "s2", "x", "s2:b9", _encode(Message(msg_id="x", shop_id="s2", buyer_id="b9",
                 text="elsewhere", ts=150.0)), [Decision("x", "s2", "s2:b9", "queued", cause="message")], 1)
        await r.write_history([_message(1), _message(2), _message(3), other])
        await r.outbox.add_reply("s1", "s1:b1", "b1", "a1", "first answer", 101.5)
        await r.outbox.add_reply("s1", "s1:b1", "b1", "a1", "second answer", 102.5)
        opened = {"s1:b1": 100.0, "s2:b9": 0.0, "s1:nobody": 0.0}
        whole = await r.histories(opened)
        assert whole["s1:b1"] == (await r.conversation("s1:b1", 100.0))[0]
        assert whole["s2:b9"] == (await r.conversation("s2:b9", 0.0))[0] and "s1:nobody" not in whole
        assert [h.text for h in whole["s1:b1"]] == ["hello 1", "first answer", "hello 2", "second answer", "hello 3"]
        less = await r.histories(opened, skip_entries=["3:3-0"], skip_replies={("s1:b1", 102.5)})
        assert [h.text for h in less["s1:b1"]] == ["hello 1", "first answer", "hello 2"]
        assert [h.text for h in (await r.histories({"s1:b1": 102.0}, limit=2))["s1:b1"]] == ["second answer", "hello 3"]
    finally:
        await r.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(st.integers(0, 9), min_size=1, max_size=30))
def test_history_rewritten_entries_replace(pg_url: str, writes: list[int]) -> None:
    """However often the same inputs are written (an owner that died after writing, the next
    owner routing the same entries again), each is one row: the figures count it once."""

    async def run() -> None:
        (r,) = await _records(pg_url, 1)
        try:
            async with r.pool.connection() as conn:
                await conn.execute("TRUNCATE history")
            for i in writes:
                await r.write_history([_message(i)])
            rows, _, _ = await r.read_rows(None, None)
            assert sorted(row[4] for row in rows) == sorted(f"m{i}" for i in set(writes))
        finally:
            await r.close()

    asyncio.run(run())


async def test_notes_through_two_instances_at_once_are_both_kept(pg_url: str) -> None:
    a, b = await _records(pg_url, 2)
    try:
        await asyncio.gather(*(r.update_profile("s1", "b1", tags=None, add_tags=(f"t{i}",),
                                                note={"text": f"note {i}", "by": "x", "ts": i})
                               for i, r in enumerate([a, b] * 10)))
        ((_, _, tags, notes, _),) = await a.profiles_since(0)
        assert sorted(n["text"] for n in notes) == sorted(f"note {i}" for i in range(20))
        assert sorted(tags) == sorted(f"t{i}" for i in range(20))
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_buyer_story_is_the_same_as_sqlite_keeps_it(pg_url: str, tmp_path) -> None:
    """Pushes recorded through PostgreSQL read back as router/storage/story.py reads them from SQLite:
    orders merged, a repeated scan once, after-sale requests merged and closed ones left out."""
    from adapters import OrderContext
    from router.storage import story
    from router.core.models import AfterSale, LogisticsEvent, Order
    from router.storage.store import Store

    pushes = [
        [OrderContext("s1", Order("o1", "paid", 99.0, goods="羽绒服"), "b1")],
        [OrderContext("s1", Order("o1", "shipped", courier="顺丰", tracking_no="SF1"), None,
                      logistics=(LogisticsEvent(10.0, "已揽收", "collected"), LogisticsEvent(20.0, "运输中", "in_transit")))],
        [OrderContext("s1", Order("o1"), None, logistics=(LogisticsEvent(20.0, "运输中", "in_transit"),),
                      aftersale=AfterSale("as1", "requested", "return", 99.0, "尺码不合适", 30.0, 30.0))],
        [OrderContext("s1", Order("o2", "paid"), "b1", aftersale=AfterSale("as2", "requested", opened=40.0, updated=40.0))],
        [OrderContext("s1", Order("o2"), None, aftersale=AfterSale("as2", "refunded", updated=50.0))],
    ]
    (r,) = await _records(pg_url, 1)
    store = Store(tmp_path / "s.db")
    try:
        for i, items in enumerate(pushes):
            await r.record_story(items, 100.0 + i)
            store.run_sync(lambda c, items=items, i=i: story.record(c, items, 100.0 + i))
        assert await r.buyer_orders("s1", "b1") == store.run_sync(lambda c: story.buyer_orders(c, "s1", "b1"))
        assert await r.open_aftersales(["s1"]) == store.run_sync(lambda c: story.open_aftersales(c, ["s1"]))
        assert [a.aftersale.aftersale_id for a in await r.open_aftersales(["s1", "s2"])] == ["as1"]
    finally:
        store.close_sync()
        await r.close()


async def test_prune_keeps_what_retention_and_delivery_require(pg_url: str) -> None:
    """``storage.history_days``: older history, delivered replies, notes and violations go;
    undelivered replies stay whatever their age; 0 keeps everything."""
    (r,) = await _records(pg_url, 1)
    try:
        day = 86400.0
        now = 100 * day
        await r.write_history([_message(1), _message(2)])  # clocks 101, 102: a hundred days ago
        async with r.pool.connection() as conn:
            await conn.execute("UPDATE history SET clock = %s WHERE msg_id = 'm2'", (now - day,))
        old_sent = await r.outbox.add_reply("s1", "s1:b1", "b1", "a1", "old, delivered", now - 50 * day)
        old_pending = await r.outbox.add_reply("s1", "s1:b1", "b1", "a1", "old, never delivered", now - 50 * day)
        await r.outbox.claim_due(now)
        await r.outbox.acked(old_sent, now)
        await r.add_note("s1", "s1:b1", "a1", "old note", now - 50 * day)
        await r.add_violations([(now - 50 * day, "s1", "s1:b1", "a1", "微信", "contact", "words")])
        assert await r.prune(0, now=now) == {}
        assert await r.prune(30, now=now) == {"history": 1, "outbox": 1, "notes": 1, "violations": 1}
        rows, _, _ = await r.read_rows(None, None)
        assert [row[4] for row in rows if row[0] == "message"] == ["m2"]
        assert [row[5] for row in rows if row[0] == "reply"] == ["old, never delivered"]
        assert old_pending in [item.id for item, _, _ in await r.outbox.claim_due(now + 60)]
    finally:
        await r.close()


async def test_reads_answer_503_when_the_database_is_gone(pg_url: str) -> None:
    from router.service.access import HTTPError
    from router.core.config import Config
    from tests.pg.conftest import _admin

    (r,) = await _records(pg_url, 1)
    admin, _ = _admin()
    try:
        admin.execute(f'DROP DATABASE "{pg_url.rsplit("/", 1)[1]}" WITH (FORCE)')  # every connection cut
        for read in (r.buyer_orders("s1", "b1"), r.open_aftersales(["s1"]), r.conversation("s1:b1", 0.0),
                     r.stats(Config.__new__(Config))):
            with pytest.raises(HTTPError) as err:
                await read
            assert err.value.status == 503 and err.value.code == "unavailable"
    finally:
        admin.close()
        await r.close()
