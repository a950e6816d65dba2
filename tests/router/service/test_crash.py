"""Crash safety and load bounds with ``fenliu serve`` as a real subprocess: SIGKILL mid-stream
loses no acknowledged message and assigns nothing twice; past the ingest bound the server says
503 instead of growing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aiohttp
import pytest

from tests.router.serve_support import (
    ENV,
    ROOT,
    Client,
    add_accounts,
    db_rows,
    free_port,
    message,
    spawn,
    wait_healthy,
    write_config,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("snapshot_every", [100_000, 40], ids=["journal", "snapshots"])
async def test_sigkill_mid_stream_loses_nothing_acknowledged(tmp_path, snapshot_every):
    """With ``snapshots``, the restart restores a snapshot taken mid-stream and replays the tail."""
    cfg = write_config(tmp_path, accept_timeout_s=300.0, grace_s=300.0, max_body=65536, snapshot_every=snapshot_every)
    db = tmp_path / "fenliu.db"
    add_accounts(db)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = spawn(cfg, port)
    acked: list[str] = []
    sent: list[dict] = []
    try:
        await wait_healthy(url, proc)
        async with aiohttp.ClientSession() as http:
            c = Client(url, http)
            admin = await c.login("acme")
            for aid in ("a-01", "a-02", "b-01"):
                status, _ = await c.call("PUT", f"/v1/agents/{aid}/status", admin, json={"status": "online"})
                assert status == 200
            stop = asyncio.Event()

            async def producer(w: int) -> None:
                i = 0
                while not stop.is_set():
                    shop = "pdd-a" if i % 3 else "tb-b"
                    batch = [message(f"w{w}-{i}-{k}", f"b-{(w * 7 + i + k) % 25}", shop) for k in range(3)]
                    i += 1
                    sent.extend(batch)
                    try:
                        status, body = await c.post_messages(shop, batch)
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        return
                    if status == 202:
                        acked.extend(m["msg_id"] for m in batch)

            workers = [asyncio.create_task(producer(w)) for w in range(8)]
            while len(acked) < 300:
                await asyncio.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    stored = {r[0] for r in db_rows(db, "SELECT msg_id FROM messages")}
    assert set(acked) <= stored
    counts = dict(db_rows(db, "SELECT msg_id, count(*) FROM decisions WHERE msg_id IS NOT NULL GROUP BY msg_id"))
    assert all(counts.get(m) == 1 for m in stored)

    if snapshot_every < 100_000:
        assert db_rows(db, "SELECT count(*) FROM snapshots")[0][0] > 0
    proc = spawn(cfg, port)
    try:
        await wait_healthy(url, proc)
        async with aiohttp.ClientSession() as http:
            c = Client(url, http)
            for shop in ("pdd-a", "tb-b"):
                mine = [m for m in sent if m["shop_id"] == shop]
                for i in range(0, len(mine), 20):
                    status, body = await c.post_messages(shop, mine[i:i + 20])
                    assert status == 202, body
            admin = await c.login("acme")
            status, stats = await c.call("GET", "/v1/stats", admin)
            assert stats["invariants"] == "ok"
            status, body = await c.call("GET", "/v1/agents", admin)
            held = [cid for a in body["agents"] for cid in a["conversations"]]
            assert len(held) == len(set(held))
            holder = {cid: a["id"] for a in body["agents"] for cid in a["conversations"]}
            status, body = await c.call("GET", "/v1/conversations", admin)
            for conv in body["conversations"]:
                assert holder.get(conv["id"]) == conv["agent_id"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    counts = dict(db_rows(db, "SELECT msg_id, count(*) FROM decisions WHERE msg_id IS NOT NULL GROUP BY msg_id"))
    assert set(counts) == {m["msg_id"] for m in sent}
    assert set(counts.values()) == {1}


async def test_load_past_the_bound_gets_503_and_memory_stays_flat(tmp_path):
    cfg = write_config(tmp_path, queue_max=20)
    add_accounts(tmp_path / "fenliu.db")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = spawn(cfg, port)
    try:
        await wait_healthy(url, proc)
        statuses: dict[int, int] = {}
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as http:
            c = Client(url, http)

            async def burst(round_: int) -> None:
                async def one(i: int) -> None:
                    batch = [message(f"r{round_}-{i}-{k}", f"b-{i % 50}") for k in range(5)]
                    status, _ = await c.post_messages("pdd-a", batch)
                    statuses[status] = statuses.get(status, 0) + 1

                await asyncio.gather(*(one(i) for i in range(300)))

            await burst(0)
            before = _rss_kb(proc.pid)
            for r in range(1, 4):
                await burst(r)
            after = _rss_kb(proc.pid)
        assert set(statuses) <= {202, 503}
        assert statuses.get(503, 0) > 0 and statuses.get(202, 0) > 0
        assert after - before < 40_000, f"RSS grew {after - before} kB"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_ctrl_c_to_the_process_group_drains_quietly(tmp_path):
    """A terminal's Ctrl-C (or systemd's SIGTERM) reaches the journal writer too: it leaves the
    shutdown to the service, which commits what it holds and exits 0, with no traceback."""
    cfg = write_config(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **ENV, "FENLIU_LOG_LEVEL": "error", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "router", "serve", "--config", str(cfg), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        await wait_healthy(url, proc)
        async with aiohttp.ClientSession() as http:
            c = Client(url, http)
            assert (await c.post_messages("pdd-a", [message(f"m-{i}", f"b-{i}") for i in range(10)]))[0] == 202
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert b"Traceback" not in err and b"KeyboardInterrupt" not in err, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert db_rows(tmp_path / "fenliu.db", "SELECT count(*) FROM messages") == [(10,)]
