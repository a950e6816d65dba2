"""Snapshots of the routing state: a restart from a snapshot and the journal's tail rebuilds
exactly what a replay of the whole journal rebuilds, and what the live service held."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core.models import AcceptEvent, AgentStatusEvent, CloseEvent, Message
from router.core.pipeline import InputError
from router.service.errors import NotYours
from router.service.service import Service
from tests.router.serve_support import ENV, NoWechat, db_rows, load, write_config

pytestmark = pytest.mark.anyio


@pytest.fixture
def env(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


def state(s: Service) -> dict:
    """Everything a restart must bring back, in comparable form."""
    d = s.router.dispatcher
    return {
        "conversations": dict(d.conversations),
        "agents": dict(d.agents),
        "queued": [c.id for c in d.queued()],
        "last_agent": dict(d.last_agent),
        "history": {cid: list(h) for cid, h in s.history.items()},
        "context": dict(s.context),
        "waiting_since": dict(s.waiting_since),
        "owner": dict(s.owner),
        "next_timer": d.next_due(),
    }


async def run_traffic(s: Service, n: int = 120) -> None:
    """Agents come and go, buyers write, agents accept and close: queues, reservations, loads,
    re-routes, all the way through (so a snapshot's tail has them too)."""
    await s.event(AgentStatusEvent("a-01", "online"))
    for i in range(n):
        buyer = f"b-{i % 23}"
        await s.ingest([Message(shop_id="pdd-a", msg_id=f"m-{i}", buyer_id=buyer, text=f"第{i}条:在吗?有XL码吗")])
        if i == 20:
            await s.event(AgentStatusEvent("a-02", "online"))
        if i == 80:
            await s.event(AgentStatusEvent("a-01", "offline"))
        if i == 100:
            await s.event(AgentStatusEvent("a-01", "online"))
        if i % 3 == 1:
            for cid, conv in list(s.router.dispatcher.conversations.items()):
                if conv.state == "reserved" and conv.agent_id:
                    await s.event(AcceptEvent(cid, conv.agent_id))
                    break
        if i % 4 == 2:
            for cid, conv in list(s.router.dispatcher.conversations.items()):
                if conv.state == "assigned" and conv.agent_id:
                    await s.reply(conv.agent_id, cid, f"亲,在的~ ({i})")
                    break
        if i % 5 == 4:
            for cid, conv in list(s.router.dispatcher.conversations.items()):
                if conv.state == "assigned":
                    await s.event(CloseEvent(cid))
                    break


async def started(cfg: Path) -> Service:
    s = Service(load(cfg, NoWechat()))
    await s.start()
    return s


async def test_a_snapshot_and_the_tail_rebuild_what_the_whole_journal_does(tmp_path, env):
    cfg = write_config(tmp_path, snapshot_every=100)
    db = tmp_path / "fenliu.db"
    live = await started(cfg)
    await run_traffic(live)
    await live.journal.writer.flush()
    before_stop = state(live)
    await live.stop()
    snaps = db_rows(db, "SELECT seq FROM snapshots ORDER BY seq")
    last = db_rows(db, "SELECT max(seq) FROM journal")[0][0]
    assert len(snaps) == 2 and snaps[-1] == (last,)  # the newest two; the last one at the stop

    # from the snapshot before the last, so that a tail is replayed on top of it
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM snapshots WHERE seq = ?", (last,))
    tail = await started(cfg)
    from_snapshot = state(tail)
    assert tail.journal.snapshot_seq == snaps[0][0] < last - 40
    await tail.stop()

    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM snapshots")
    full = await started(cfg)
    from_journal = state(full)
    assert full.journal.snapshot_seq == 0
    await full.stop()

    assert from_snapshot["conversations"] and from_snapshot["queued"] and from_snapshot["history"]
    assert any(h.who == "agent" for items in from_snapshot["history"].values() for h in items)
    for key in from_journal:
        assert from_snapshot[key] == from_journal[key], key
        assert from_snapshot[key] == before_stop[key] or key in ("owner", "next_timer"), key


async def test_the_dedupe_ids_come_back_with_a_snapshot(tmp_path, env):
    cfg = write_config(tmp_path, snapshot_every=10, dedupe_window=5)
    live = await started(cfg)
    await live.event(AgentStatusEvent("a-01", "online"))
    for i in range(30):
        await live.ingest([Message(shop_id="pdd-a", msg_id=f"m-{i}", buyer_id=f"b-{i}", text="在吗")])
    await live.stop()
    again = await started(cfg)
    try:
        assert again.journal.snapshot_seq > 0
        result = await again.ingest([Message(shop_id="pdd-a", msg_id=f"m-{i}", buyer_id=f"b-{i}", text="在吗")
                                     for i in (0, 12, 29)] + [Message(shop_id="pdd-a", msg_id="m-30", buyer_id="b-30", text="在吗")])
        assert sorted(result.duplicates) == ["m-0", "m-12", "m-29"] and result.accepted == ["m-30"]
    finally:
        await again.stop()


async def test_a_snapshot_of_another_configuration_is_not_used(tmp_path, env):
    """Any change to the routing configuration means a full replay; the server's own settings
    (port, store path, log level) do not count."""
    cfg = write_config(tmp_path, snapshot_every=10)
    live = await started(cfg)
    await run_traffic(live)
    expected = state(live)
    await live.stop()
    main = cfg / "fenliu.toml"
    main.write_text(main.read_text(encoding="utf-8").replace('level = "warning"', 'level = "error"'), encoding="utf-8")
    again = await started(cfg)
    assert again.journal.snapshot_seq > 0
    await again.stop()
    agents = cfg / "agents.toml"
    agents.write_text(agents.read_text(encoding="utf-8") + "\n# a comment is a change too\n", encoding="utf-8")
    again = await started(cfg)
    try:
        assert again.journal.snapshot_seq == 0  # the whole journal was replayed
        assert state(again)["conversations"] == expected["conversations"]
    finally:
        await again.stop()


async def test_an_unreadable_snapshot_costs_a_full_replay(tmp_path, env):
    cfg = write_config(tmp_path, snapshot_every=10)
    db = tmp_path / "fenliu.db"
    live = await started(cfg)
    await run_traffic(live)
    expected = state(live)
    await live.stop()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE snapshots SET body = x'00ff00'")
    again = await started(cfg)
    try:
        assert again.journal.snapshot_seq == 0
        assert state(again)["conversations"] == expected["conversations"]
    finally:
        await again.stop()


_ops = st.lists(st.one_of(
    st.tuples(st.just("message"), st.integers(0, 9)),
    st.tuples(st.just("accept"), st.integers(0, 9)),
    st.tuples(st.just("reply"), st.integers(0, 9)),
    st.tuples(st.just("close"), st.integers(0, 9)),
    st.tuples(st.just("status"), st.sampled_from(["a-01", "a-02"]), st.sampled_from(["online", "offline", "break"])),
), min_size=5, max_size=50)


async def _apply(s: Service, ops: list[tuple]) -> None:
    n = 0
    for op in ops:
        convs = list(s.router.dispatcher.conversations.values())
        pick = convs[op[1] % len(convs)] if convs and op[0] in ("accept", "reply", "close") else None
        try:
            if op[0] == "message":
                n += 1
                await s.ingest([Message(shop_id="pdd-a", msg_id=f"m-{n}", buyer_id=f"b-{op[1]}", text="在吗")])
            elif op[0] == "status":
                await s.event(AgentStatusEvent(op[1], op[2]))
            elif pick is not None and pick.agent_id and op[0] == "accept":
                await s.event(AcceptEvent(pick.id, pick.agent_id))
            elif pick is not None and pick.agent_id and op[0] == "reply":
                await s.reply(pick.agent_id, pick.id, "亲,在的~")
            elif pick is not None and op[0] == "close":
                await s.event(CloseEvent(pick.id))
        except (InputError, NotYours):
            pass


async def _snapshot_matches_journal(root: Path, ops: list[tuple], every: int) -> None:
    cfg = write_config(root, snapshot_every=every)
    db = root / "fenliu.db"
    live = await started(cfg)
    await _apply(live, ops)
    await live.stop()
    with sqlite3.connect(db) as conn:  # restart from the older snapshot, if any, so a tail is replayed
        conn.execute("DELETE FROM snapshots WHERE seq = (SELECT max(seq) FROM snapshots)")
    tail = await started(cfg)
    from_snapshot = state(tail)
    await tail.stop()
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM snapshots")
    full = await started(cfg)
    from_journal = state(full)
    await full.stop()
    assert from_snapshot == from_journal


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops, every=st.integers(2, 25))
def test_any_traffic_restores_the_same_from_a_snapshot(tmp_path_factory, env, ops, every):
    """Property: whatever the traffic and wherever the snapshot falls, snapshot + tail and the
    whole journal rebuild the same state."""
    anyio.run(_snapshot_matches_journal, tmp_path_factory.mktemp("snap"), ops, every)
