"""With PostgreSQL records, an instance's live figures start from every instance's rows of the
day, read through the records interface — not from its own SQLite file (issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import aiohttp
import psycopg
import pytest

from router.core.models import Decision
from router.storage.store import connect
from router.storage.writer import flat_rows, write_rows
from tests.pg.support import PG_PASSWORD, Platform, add_accounts, write_pg_config
from tests.redis.support import Instances, accounts_db, owners, shared_redis, shops_per_shard, wait_for  # noqa: F401 - shared_redis: a fixture
from tests.router.serve_support import ENV, ROOT, SECRET_A, Client, free_port, message, wait_healthy

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]


async def test_an_instance_started_later_answers_the_days_figures_at_once(tmp_path, shared_redis, pg_url):  # noqa: F811
    r, prefix = shared_redis
    shops = shops_per_shard(2)
    platform = Platform()
    await platform.start()
    cfg = write_pg_config(tmp_path, prefix, pg_url, platform.url, shops=shops, agents=["x1"], shards=2, cap=5)
    add_accounts(cfg, ["x1"])
    first = Instances(cfg, tmp_path / "first", 1, ["x1"])
    late = None
    try:
        await first.healthy()
        await wait_for(lambda: None not in owners(r, prefix, 2).values(), 20, "every shard owned")
        async with aiohttp.ClientSession() as http:
            a = Client(first.urls[0], http)
            for i, shop in enumerate(shops):
                st, body = await a.post_messages(shop, [message(f"m{i}", f"buyer-{i}", shop)], secret=SECRET_A)
                assert st == 202, body
            with psycopg.connect(pg_url) as conn:
                await wait_for(lambda: conn.execute("SELECT count(*) FROM history WHERE kind = 'message'").fetchone() == (2,),
                               10, "both messages in PostgreSQL")
            # the late instance's own file holds rows of today from a single-node past: not counted
            db = tmp_path / "late.db"
            accounts_db(db, ["x1"])
            conn = connect(db)
            now = time.time() - 60
            write_rows(conn, flat_rows([("message", i, now, shops[0], f"old-{i}", f"{shops[0]}:old-{i}", b"{}",
                                         [Decision(f"old-{i}", shops[0], f"{shops[0]}:old-{i}", "queued")])
                                        for i in range(1, 4)]))
            conn.close()
            url = f"http://127.0.0.1:{free_port()}"
            with open(tmp_path / "late.log", "wb") as log:
                late = subprocess.Popen([sys.executable, "-m", "router", "serve", "--config", str(cfg), "--port",
                                         url.rsplit(":", 1)[1], "--store", str(db)], cwd=ROOT, stdout=log,
                                        stderr=subprocess.STDOUT, env={**os.environ, **ENV, "FENLIU_LOG_LEVEL": "error"})
            await wait_healthy(url, late)
            b = Client(url, http)
            admin = await b.login("ops", PG_PASSWORD)
            st, today = await b.call("GET", "/v1/today", admin)  # the first answer, not after a follow round
            assert st == 200, today
            assert (today["messages"], today["conversations"]) == (2, 2), today
    finally:
        if late is not None:
            late.terminate()
            late.wait(timeout=15)
        first.stop()
        await platform.stop()
