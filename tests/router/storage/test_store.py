"""The store: group commit, per-job isolation, and recovery of the router's state by replaying
the journal with the recorded clock values."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from router.core.models import AcceptEvent, AgentStatusEvent, CloseEvent, Message, TransferEvent
from router.service.service import Service
from router.storage.store import WAL_CHECKPOINT_PAGES, Store, connect
from tests.router.serve_support import ENV, load, write_config

pytestmark = pytest.mark.anyio


async def test_group_commit_and_isolation(tmp_path):
    store = Store(tmp_path / "s.db")
    store.start()
    with pytest.raises(RuntimeError):  # the writer thread owns the connection now
        store.run_sync(lambda c: None)

    def insert(i):
        return lambda c: c.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (f"k{i}", "v")).lastrowid

    def boom(c: sqlite3.Connection):
        c.execute("INSERT INTO meta (key, value) VALUES ('bad', 'v')")
        raise ValueError("no")

    results = await asyncio.gather(*(store.call(insert(i)) for i in range(200)), store.call(boom),
                                   return_exceptions=True)
    assert isinstance(results[-1], ValueError)
    assert store.commits < 200
    rows = await store.call(lambda c: c.execute("SELECT key FROM meta ORDER BY key").fetchall())
    assert len(rows) == 200 and ("bad",) not in rows
    await store.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _state(service: Service) -> dict:
    d = service.router.dispatcher
    return {
        "conversations": {cid: (c.state, c.agent_id, c.skill, c.priority, c.reserved_until, c.messages)
                          for cid, c in d.conversations.items()},
        "agents": {aid: (a.status, a.load, sorted(a.conversations), a.assigned) for aid, a in d.agents.items()},
        "now": d.now,
    }


async def test_restart_rebuilds_the_same_state(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = write_config(tmp_path, accept_timeout_s=0.3)
    config = load(cfg)
    svc = Service(config)
    await svc.start()
    await svc.event(AgentStatusEvent("a-01", "online"))
    await svc.event(AgentStatusEvent("a-02", "online"))
    for i in range(12):
        await svc.ingest([Message("pdd-a", f"m-{i}", f"b-{i % 8}", "在吗")])
    await svc.event(AcceptEvent("pdd-a:b-0", svc.router.dispatcher.conversations["pdd-a:b-0"].agent_id))
    await asyncio.sleep(0.6)  # some reservations time out and move, through journaled ticks
    await svc.ingest([Message("pdd-a", "m-late", "b-9", "还在吗")])
    owner = svc.router.dispatcher.conversations["pdd-a:b-0"].agent_id
    await svc.event(TransferEvent("pdd-a:b-0", to_agent="a-02" if owner == "a-01" else "a-01"))
    await svc.event(CloseEvent("pdd-a:b-1"))
    await svc.set_profile("pdd-a", "b-3", tags=["vip"])
    before = _state(svc)
    result = await svc.ingest([Message("pdd-a", "m-3", "b-3", "dup")])
    assert result.duplicates == ["m-3"]
    await svc.stop()

    again = Service(load(cfg))
    await again.start()
    try:
        after = _state(again)
        assert after["conversations"] == before["conversations"]
        assert after["agents"] == before["agents"]
        again.router.dispatcher.check_invariants()
        assert (await again.ingest([Message("pdd-a", "m-5", "b-5", "dup")])).duplicates == ["m-5"]
        assert again.profiles[("pdd-a", "b-3")].tags == ["vip"]
    finally:
        await again.stop()
    conn = sqlite3.connect(tmp_path / "fenliu.db")
    assert conn.execute("SELECT count(*) FROM decisions WHERE cause = 'reservation_timeout'").fetchone()[0] > 0
    assert conn.execute("SELECT state FROM conversations WHERE id = 'pdd-a:b-1'").fetchone() == ("closed",)


def test_connections_checkpoint_the_wal_in_large_steps(tmp_path):
    conn = connect(tmp_path / "s.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_CHECKPOINT_PAGES > 1000
    finally:
        conn.close()


async def test_one_failing_ingest_job_in_a_batch_spares_the_others(tmp_path, monkeypatch):
    """Ingest jobs that reach the consumer together are routed and committed together; a job
    that fails unexpectedly gets its exception, the others their results, and nothing leaks."""
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    svc = Service(load(write_config(tmp_path)))
    await svc.start()
    try:
        route = svc.router.handle_message

        async def flaky(msg):
            if msg.msg_id == "bad":
                raise RuntimeError("plugin bug outside any hook")
            return await route(msg)

        monkeypatch.setattr(svc.router, "handle_message", flaky)
        jobs = [[Message("pdd-a", "m-1", "b-1", "在吗")], [Message("pdd-a", "bad", "b-2", "在吗")],
                [Message("pdd-a", "m-3", "b-3", "在吗"), Message("pdd-a", "m-4", "b-4", "在吗")]]
        results = await asyncio.gather(*(svc.ingest(j) for j in jobs), return_exceptions=True)
        assert results[0].accepted == ["m-1"]
        assert isinstance(results[1], RuntimeError)
        assert results[2].accepted == ["m-3", "m-4"]
        assert svc.pending_ingest == 0
        journaled = await svc.store.call(lambda c: c.execute("SELECT msg_id FROM messages ORDER BY msg_id").fetchall())
        assert journaled == [("m-1",), ("m-3",), ("m-4",)]
        assert set(svc.history) == {"pdd-a:b-1", "pdd-a:b-3", "pdd-a:b-4"}
    finally:
        await svc.stop()
