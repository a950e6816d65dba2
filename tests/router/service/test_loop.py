"""The consumer (router/service/loop.py) sizes the jobs it routes in one step from what they
cost, so a backlog is committed and answered a few jobs at a time instead of all at once."""

from __future__ import annotations

import asyncio

import pytest

from router.core.models import Message
from router.service import loop
from tests.router.serve_support import ENV, db_rows, write_config
from tests.router.storage.test_snapshot import started

pytestmark = pytest.mark.anyio


@pytest.fixture
def env(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


def _message(i: int) -> Message:
    return Message(shop_id="pdd-a", msg_id=f"m-{i}", buyer_id=f"b-{i % 3}", text="在吗")


async def test_a_backlog_of_costly_jobs_is_routed_and_committed_a_few_at_a_time(tmp_path, env, monkeypatch):
    live = await started(write_config(tmp_path))
    try:
        commits: list[int] = []
        commit = live.journal.commit

        def counted(rows, afters):
            commits.append(sum(1 for r in rows if r[0] == "message"))
            commit(rows, afters)

        monkeypatch.setattr(live.journal, "commit", counted)
        await live.ingest([_message(0)])  # the consumer has measured a step
        monkeypatch.setattr(loop, "STEP_S", 1e-9)  # every job costs more than a step may take
        results = await asyncio.gather(*(live.ingest([_message(i)]) for i in range(1, 7)))
        assert [r.accepted for r in results] == [[f"m-{i}"] for i in range(1, 7)]
        assert [n for n in commits if n] == [1] * 7  # (a clock tick may commit between them)
    finally:
        await live.stop()
    ids = [r[0] for r in db_rows(tmp_path / "fenliu.db", "SELECT msg_id FROM journal WHERE kind = 'message' ORDER BY seq")]
    assert ids == [f"m-{i}" for i in range(7)]
