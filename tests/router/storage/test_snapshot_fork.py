"""Snapshots pickled by a forked child: routing goes on while the child pickles, what it pickles
is the state as it was at the fork, and a restart from it rebuilds what the live service held."""

from __future__ import annotations

import os
import threading
import time

import pytest
import structlog

from router.core.models import AgentStatusEvent, Message
from router.storage import snapshot
from tests.router.serve_support import ENV, db_rows, write_config
from tests.router.storage.test_snapshot import started, state

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork here")]


@pytest.fixture
def env(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


class SlowToPickle:
    """A plugin's ``meta`` value that takes its time to pickle (in the snapshot's child)."""

    def __reduce__(self):
        time.sleep(1.5)
        return (SlowToPickle, ())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlowToPickle)

    __hash__ = None  # type: ignore[assignment]


def _message(i: int) -> Message:
    return Message(shop_id="pdd-a", msg_id=f"m-{i}", buyer_id=f"b-{i % 7}", text="在吗")


async def _one_open(tmp_path):
    """A service snapshotting every 5 entries, with one agent online and one open conversation."""
    cfg = write_config(tmp_path, snapshot_every=5)
    live = await started(cfg)
    await live.event(AgentStatusEvent("a-01", "online"))
    await live.ingest([_message(0)])
    return cfg, live, next(iter(live.router.dispatcher.conversations.values()))


async def test_routing_goes_on_while_a_snapshot_is_pickled(tmp_path, env):
    cfg, live, conv = await _one_open(tmp_path)
    conv.meta["slow"] = SlowToPickle()
    i = 1
    while live.journal._snapshotting is None:
        assert i < 20, "no snapshot was started"
        await live.ingest([_message(i)])
        i += 1
    pickling = live.journal._snapshotting
    for j in range(i, i + 5):  # each answered once committed, with the child still pickling
        result = await live.ingest([_message(j)])
        assert result.accepted == [f"m-{j}"]
    assert not pickling.done()
    await pickling
    expected = state(live)
    await live.stop()
    assert db_rows(tmp_path / "fenliu.db", "SELECT count(*) FROM snapshots")[0][0] == 2
    again = await started(cfg)
    try:
        assert again.journal.snapshot_seq == again.journal.seq  # the stop's snapshot: nothing replayed
        assert state(again) == expected
        assert again.router.dispatcher.conversations[conv.id].meta["slow"] == SlowToPickle()
    finally:
        await again.stop()


async def test_the_child_pickles_the_state_as_it_was_at_the_fork(tmp_path, env):
    cfg = write_config(tmp_path)
    live = await started(cfg)
    try:
        await live.ingest([_message(0)])
        d = live.router.dispatcher
        conv = next(iter(d.conversations.values()))
        conv.meta["slow"] = SlowToPickle()
        collect = snapshot.dump_later(d, lambda: b"service state")
        conv.meta["after"] = "the fork"  # the parent goes on; the child's copy does not see it
        snap = snapshot.load(collect())
        assert snap["service"] == b"service state"
        kept = snap["dispatcher"]["conversations"][conv.id]
        assert kept.meta == {"slow": SlowToPickle()} and kept.state == conv.state
    finally:
        await live.stop()


async def test_an_unpicklable_state_fails_the_snapshot_not_the_service(tmp_path, env):
    cfg, live, conv = await _one_open(tmp_path)
    conv.meta["bad"] = threading.Lock()
    with structlog.testing.capture_logs() as logs:
        for i in range(1, 12):
            assert (await live.ingest([_message(i)])).accepted == [f"m-{i}"]
        while live.journal._snapshotting is not None:
            await live.journal._snapshotting
    failed = [e for e in logs if e["event"] == "snapshot_failed"]
    assert failed and failed[0]["error"] == "TypeError: cannot pickle '_thread.lock' object"
    del conv.meta["bad"]
    expected = state(live)
    await live.stop()
    again = await started(cfg)
    try:
        assert state(again) == expected
    finally:
        await again.stop()
