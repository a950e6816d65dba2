"""A reply reaches the buyer once even when an attempt's outcome is unknown: a callback that
timed out after it was sent, or a reply found pending at start (the sender died before it
recorded the answer). The bridge is asked ``GET ?reply_id=N`` first; a bridge without that lookup
gets the reply again marked ``X-Fenliu-Redelivery: 1`` (a refusal with an answer is not in doubt:
test_adapters.py's retry test). The PostgreSQL outbox's side of this is
in tests/pg/test_records.py and the SIGKILL test of tests/pg/test_instances.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

import adapters.bridge
from adapters.bridge import REDELIVERY_HEADER
from tests.adapters.support import Bridge, acked, answer_once, bridge_config, reply_through
from tests.router.serve_support import ENV, NoWechat, db_rows, start_server

pytestmark = pytest.mark.anyio


@pytest.fixture
async def env(monkeypatch) -> AsyncIterator[None]:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(adapters.bridge, "TIMEOUT", aiohttp.ClientTimeout(total=0.5))
    yield


async def test_a_callback_that_timed_out_is_looked_up_not_sent_again(tmp_path, env) -> None:
    async with Bridge() as bridge:
        bridge.stall_first = True
        await answer_once(tmp_path, bridge)
    assert len(bridge.posts) == 1 and bridge.lookups == ["reply_id=1"]
    assert db_rows(tmp_path / "fenliu.db", "SELECT attempts FROM outbox") == [(1,)]  # the timed-out attempt


async def test_a_bridge_without_the_lookup_gets_a_marked_redelivery(tmp_path, env) -> None:
    async with Bridge(lookup=False) as bridge:
        bridge.stall_first = True
        await answer_once(tmp_path, bridge)
    (first, h1), (again, h2) = bridge.posts
    assert first == again and REDELIVERY_HEADER not in h1 and h2[REDELIVERY_HEADER] == "1"


async def test_a_reply_pending_at_start_is_looked_up_first(tmp_path, env) -> None:
    """The service stopped while the callback had the reply and had not answered: at start the
    reply is in doubt, the bridge says it has it, and it is not sent again."""
    async with Bridge() as bridge:
        bridge.stall_first = True
        cfg = bridge_config(tmp_path, bridge.url)
        srv = await start_server(cfg, NoWechat())
        try:
            await reply_through(srv, "有的亲")
            async with asyncio.timeout(10):
                while not bridge.posts:
                    await asyncio.sleep(0.02)
        finally:
            await srv.stop()
        assert db_rows(tmp_path / "fenliu.db", "SELECT acked FROM outbox") == [(None,)]
        srv = await start_server(cfg, NoWechat())
        try:
            await acked(tmp_path / "fenliu.db")
        finally:
            await srv.stop()
    assert len(bridge.posts) == 1 and bridge.lookups == ["reply_id=1"]
