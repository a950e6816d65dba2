"""Today's figures (router/today.py): counted live from committed journal rows, read back from
the store at start, never twice, and reset at midnight."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from router.models import Decision
from router.service import Service
from router.store import connect
from router.today import Today
from router.writer import flat_rows, write_rows
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
    assert figures["missed"] == 2  # b-1 answered late, b-3 closed unanswered
    assert figures["pending"] == 0 and figures["reply_rate"] == 0.0
    assert figures["avg_response_s"] == 300.0


async def test_a_new_day_starts_from_nothing(today):
    await today.load()
    today.feed([_message(1, NOON, "m-1", "b-1")], {})
    assert today.figures()["messages"] == 1
    first_day, tomorrow = today.day, today.day_end + 60
    today.feed([_message(2, tomorrow, "m-2", "b-2"), _message(3, tomorrow + 1, "m-3", "b-3")], {})
    assert today.day != first_day
    assert sum(f.messages for f in today.by_key.values()) == 2
    assert set(today.waits) == {"pdd-a:b-2", "pdd-a:b-3"}


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
