"""Today's figures (router/service/today.py): folded live from committed journal rows, read back from
the store at start, never twice, reset at midnight; a lapsed window charged to whoever held the
conversation when it lapsed, the same live as from the store (router/storage/figures.py)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp
import msgspec
import pytest

from router.core.models import Decision
from router.service.service import Service
from router.storage.store import connect
from router.service.today import Today
from router.storage.writer import flat_rows, write_rows
from tests.router.serve_support import ENV, Agent, Client, add_accounts, load, start_server
from tests.web.support import message, write_config

pytestmark = pytest.mark.anyio


def _message(seq: int, clock: float, msg_id: str, buyer: str, action: str = "queued",
             agent_id: str | None = None) -> tuple:
    cid = f"pdd-a:{buyer}"
    return ("message", seq, clock, "pdd-a", msg_id, cid, b"{}",
            [Decision(msg_id, "pdd-a", cid, action, agent_id=agent_id)])


def _reply(buyer: str, agent_id: str, ts: float) -> tuple:
    return ("reply", "pdd-a", f"pdd-a:{buyer}", buyer, agent_id, "亲，在的", ts)


#: Noon in the tests' time zone: rows a few minutes old are today's whatever the real time is.
NOON = datetime(2026, 11, 23, 12, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()


@pytest.fixture
def today(tmp_path):
    service = Service(load(write_config(tmp_path)), store_path=tmp_path / "today.db")
    assert service.config.main.defaults.timezone == "Asia/Shanghai"
    yield Today(service, clock=lambda: NOON)
    service.store.close_sync()


async def test_batches_committed_while_loading_are_counted_once(today):
    now = NOON
    stored = [_message(1, now - 5, "m-1", "b-1", "assigned", "a-01"), _reply("b-1", "a-01", now - 2),
              _message(3, now - 4, "m-3", "b-3"),
              ("event", 4, now - 3, "pdd-a", None, "pdd-a:b-3", b'{"type":"close","conversation_id":"pdd-a:b-3"}', [])]
    conn = connect(today.service.store.path)
    ids = write_rows(conn, flat_rows(stored))
    conn.close()
    today.feed(stored, ids)  # committed before the read: in the store and in the backlog
    today.feed([_message(5, now, "m-2", "b-2")], {})  # committed after the read's snapshot
    assert today.figures()["messages"] == 0  # nothing counted before the store is read

    await today.load()

    figures = today.figures()
    assert figures["messages"] == 3 and figures["replies"] == 1 and figures["answered"] == 1
    assert figures["missed"] == 1  # b-3 closed unanswered, read back from the store
    assert figures["agents"]["a-01"]["conversations"] == 1
    assert figures["pending"] == 1  # b-2 waits


async def test_live_rows_are_counted_at_once_with_waits_and_closes(today):
    await today.load()
    now = NOON
    today.feed([_message(1, now - 400, "m-1", "b-1"), _message(2, now - 390, "m-2", "b-1")], {})
    today.feed([_message(3, now - 300, "m-3", "b-2", "bot")], {})
    today.feed([_reply("b-1", "a-01", now - 100)], {0: 1})
    today.feed([("event", 4, now - 50, "pdd-a", None, "pdd-a:b-3", b'{"type":"close"}', []),
                _message(5, now - 60, "m-4", "b-3")], {})
    today.feed([("event", 6, now - 10, "pdd-a", None, "pdd-a:b-3", b'{"type":"close","conversation_id":"pdd-a:b-3"}', [])], {})
    figures = today.figures()
    assert figures["messages"] == 4
    assert figures["answered"] == 1 and figures["in_time"] == 0  # answered after 300 s: missed
    assert figures["missed"] == 3  # b-1 answered late, b-2 never by a human, b-3 closed unanswered
    assert figures["pending"] == 0 and figures["reply_rate"] == 0.0
    assert figures["avg_response_s"] == 300.0


async def test_a_new_day_starts_from_nothing(today):
    await today.load()
    today.feed([_message(1, NOON, "m-1", "b-1")], {})
    assert today.figures()["messages"] == 1
    first_day, tomorrow = today.day, today.day_end + 60
    today.feed([_message(2, tomorrow, "m-2", "b-2"), _message(3, tomorrow + 1, "m-3", "b-3")], {})
    assert today.day != first_day
    assert today.figures()["messages"] == 2
    assert set(today.ledger.open) == {"pdd-a:b-2", "pdd-a:b-3"}


async def test_a_reader_after_midnight_sees_a_new_day_without_any_traffic(today):
    await today.load()
    today.feed([_message(1, NOON, "m-1", "b-1")], {})
    assert today.figures()["messages"] == 1 and today.figures()["pending"] == 1
    today.clock = lambda: NOON + 86_400
    figures = today.figures()
    assert figures["messages"] == 0 and figures["pending"] == 0 and figures["day"] == "2026-11-24"


async def test_the_figures_survive_a_restart(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = write_config(tmp_path)
    add_accounts(tmp_path / "fenliu.db")
    srv = await start_server(cfg)
    async with aiohttp.ClientSession() as http:
        c = Client(srv.url, http)
        agent = await Agent.connect(c, await c.login("acme:a01"))
        await agent.next("hello")
        await c.post_messages("pdd-a", message("m-1", "b-1", "在吗"))
        await agent.next("assigned", conversation_id="pdd-a:b-1")
        assert (await agent.request({"type": "accept", "conversation_id": "pdd-a:b-1"}))["ok"]
        assert (await agent.request({"type": "reply", "conversation_id": "pdd-a:b-1", "text": "亲，在的"}))["ok"]
        await c.post_messages("pdd-a", message("m-2", "b-2", "在吗"))
        await agent.close()
        _, before = await c.call("GET", "/v1/today", await c.login("acme:lead-a"))
    await srv.stop()

    srv = await start_server(cfg)
    try:
        async with aiohttp.ClientSession() as http:
            c = Client(srv.url, http)
            _, after = await c.call("GET", "/v1/today", await c.login("acme:lead-a"))
    finally:
        await srv.stop()
    assert before["messages"] == 2 and before["replies"] == 1 and before["answered"] == 1
    for key in ("messages", "conversations", "replies", "answered", "in_time", "hours", "agents"):
        assert after[key] == before[key], key


async def test_a_store_that_cannot_be_read_leaves_live_figures(today, monkeypatch):
    def broken(now: float) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(today, "_read_store", broken)
    today.feed([_message(1, NOON, "m-1", "b-1")], {})
    await today.load()
    await today.ready()
    assert today.figures()["messages"] == 1


def _decide(seq: int, clock: float, buyer: str, action: str, agent_id: str | None, cause: str = "transfer") -> tuple:
    cid = f"pdd-a:{buyer}"
    return ("tick", seq, clock, None, None, None, None, [Decision(None, "pdd-a", cid, action, agent_id, cause=cause)])


def _transfer(seq: int, clock: float, buyer: str, to: str) -> tuple:
    cid = f"pdd-a:{buyer}"
    body = b'{"type":"transfer","conversation_id":"%s","to_agent":"%s"}' % (cid.encode(), to.encode())
    return ("event", seq, clock, "pdd-a", None, cid, body, [Decision(None, "pdd-a", cid, "assigned", to, cause="transfer")])


async def test_a_lapsed_window_is_charged_to_who_held_it_not_who_replied_later(today):
    """a-02 holds b-1 when its 180 s run out, hands it to a-01, who replies: the miss is a-02's.
    b-2 lapses in the queue before a-01 gets it: the queue's. The live fold and ``stats`` over the
    same rows in the store agree."""
    from router.storage.stats import compute

    now = NOON
    rows = [_message(1, now - 900, "m-1", "b-1", "assigned", "a-02"),
            _transfer(2, now - 600, "b-1", "a-01"),
            _reply("b-1", "a-01", now - 590),
            _message(3, now - 500, "m-2", "b-2", "queued"),
            _decide(4, now - 200, "b-2", "assigned", "a-01", "queue_drain"),
            _reply("b-2", "a-01", now - 190),
            _message(5, now - 100, "m-3", "b-3", "assigned", "a-01"),
            _reply("b-3", "a-01", now - 40)]
    conn = connect(today.service.store.path)
    ids = write_rows(conn, flat_rows(rows))
    await today.load()
    live = today.figures()
    agents = live["agents"]
    assert (agents["a-02"]["in_time"], agents["a-02"]["missed"]) == (0, 1)
    assert (agents["a-01"]["in_time"], agents["a-01"]["missed"]) == (1, 0)  # b-3 only
    assert agents["a-01"]["replies"] == 3 and agents["a-02"]["replies"] == 0
    queue = live["stats"].queue
    assert (queue.reply_3min_eligible, queue.reply_3min_hits) == (1, 0)
    assert (live["in_time"], live["missed"], live["reply_rate"]) == (1, 2, round(1 / 3, 4))
    assert agents["a-02"]["transfers"] == 1
    stored = compute(conn, today.service.config, since=today.day_start, until=today.day_end, now=now)
    conn.close()
    def plain(rows):  # conversion is a period report's figure (the order table), not the day board's
        return [msgspec.structs.replace(r, conversion_rate=None) for r in rows]

    assert plain([stored.total, *stored.by_agent, stored.queue]) == [live["stats"].total, *live["stats"].by_agent,
                                                                     live["stats"].queue]
    del ids


async def test_a_window_that_lapses_while_nobody_writes_is_charged_at_read_time(today):
    """No row arrives after the deadline: reading past it charges the holder then."""
    await today.load()
    today.feed([_message(1, NOON - 100, "m-1", "b-1", "assigned", "a-01")], {})
    assert today.figures()["pending"] == 1 and today.figures()["agents"]["a-01"]["missed"] == 0
    today.clock = lambda: NOON + 100
    figures = today.figures()
    assert figures["pending"] == 0 and figures["agents"]["a-01"]["missed"] == 1
