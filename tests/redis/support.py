"""Shared pieces for the Redis backend tests: the Redis to use (``REDIS_URL``), a private key
prefix per test that is deleted afterwards, a config for N instances, and real ``fenliu serve``
subprocesses on loopback ports."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from router.storage.redis.keys import shard_of
from tests.router.serve_support import ENV, ROOT, free_port, wait_healthy

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_or_skip() -> redis.Redis:
    r = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        r.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis answers at REDIS_URL={REDIS_URL} ({exc})")
    return r


@pytest.fixture
def shared_redis() -> Iterator[tuple[redis.Redis, str]]:
    """A Redis client and a random key prefix; every key under the prefix is deleted after."""
    r = redis_or_skip()
    prefix = f"fenliu-test-{secrets.token_hex(4)}"
    try:
        yield r, prefix
    finally:
        for batch in _batched(r.scan_iter(match=f"{prefix}:*", count=1000), 500):
            r.unlink(*batch)
        r.close()


def _batched(it: Iterator[Any], n: int) -> Iterator[list[Any]]:
    out: list[Any] = []
    for x in it:
        out.append(x)
        if len(out) == n:
            yield out
            out = []
    if out:
        yield out


def write_config(root: Path, prefix: str, *, shops: dict[str, str], agents: list[dict[str, Any]], shards: int,
                 accept_timeout_s: float = 300.0, grace_s: float = 300.0, sticky_hours: float = 0,
                 queue_max: int = 10000, strategy: str = "round_robin") -> Path:
    """Shops (id → secret env var), agents, no business hours, the bot off (every message needs
    a human), round robin (or ``strategy``), reservations long enough to outlive the test."""
    cfg = root / "config"
    (cfg / "policies").mkdir(parents=True, exist_ok=True)
    (cfg / "fenliu.toml").write_text(f"""
[server]
host = "127.0.0.1"
port = 0
max_body_bytes = 262144
max_batch = 100
ingest_queue_max = {queue_max}
reconnect_grace_s = {grace_s}

[storage]
backend = "redis"
path = "{root / 'unused.db'}"
redis_url = "{REDIS_URL}"
redis_prefix = "{prefix}"
shards = {shards}

[plugins]
disabled = ["bot", "sensitive"]

[logging]
level = "warning"
""", encoding="utf-8")
    (cfg / "shops.toml").write_text("".join(
        f'[[shops]]\nid = "{sid}"\nplatform = "pinduoduo"\nsecret_env = "{env}"\n\n' for sid, env in shops.items()),
        encoding="utf-8")
    (cfg / "agents.toml").write_text("".join(
        f'[[agents]]\nid = "{a["id"]}"\nskills = ["presale", "logistics", "aftersale", "vip"]\n'
        f'shops = {list(a["shops"])!r}\nmax_concurrent = {a["cap"]}\n'.replace("'", '"')
        + (f'account = "{a["account"]}"\n' if a.get("account") else "") + "\n"
        for a in agents), encoding="utf-8")
    (cfg / "policies" / "default.toml").write_text(f"""
[dispatch]
strategy = "{strategy}"
sticky_hours = {sticky_hours}
accept_timeout_s = {accept_timeout_s}
on_agent_offline = "reroute"
targets = [{{ skills = ["@skill", "presale", "logistics", "aftersale"] }}]
""", encoding="utf-8")
    return cfg


class Instances:
    """N ``fenliu serve`` subprocesses on one config, each with its own SQLite (accounts, outbox)."""

    def __init__(self, cfg: Path, root: Path, n: int, agents: list[str], env: dict[str, str] | None = None) -> None:
        self.procs: list[subprocess.Popen] = []
        self.urls: list[str] = []
        for i in range(n):
            db = root / f"node{i}.db"
            accounts_db(db, agents)
            port = free_port()
            full_env = {**os.environ, **ENV, **(env or {}), "FENLIU_LOG_LEVEL": os.environ.get("FENLIU_TEST_LOG_LEVEL", "error"), "PYTHONUNBUFFERED": "1"}
            with open(root / f"node{i}.log", "wb") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "router", "serve", "--config", str(cfg), "--port", str(port), "--store", str(db)],
                    cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT))
            self.urls.append(f"http://127.0.0.1:{port}")

    async def healthy(self) -> None:
        await asyncio.gather(*(wait_healthy(u, p) for u, p in zip(self.urls, self.procs, strict=True)))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def shops_per_shard(shards: int) -> list[str]:
    """One shop id per shard, in shard order: a test that needs every shard busy names these."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < shards:
        sid = f"shop-{i}"
        found.setdefault(shard_of(sid, shards), sid)
        i += 1
    return [found[n] for n in range(shards)]


def owners(r: redis.Redis, prefix: str, shards: int) -> dict[int, str | None]:
    """Which instance holds each shard's lease (a token is ``epoch:instance:seq``)."""
    out: dict[int, str | None] = {}
    for n in range(shards):
        token = r.get(f"{prefix}:lease:{n}")
        out[n] = token.decode().split(":", 1)[1].rsplit(":", 1)[0] if token else None
    return out


async def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def decisions(r: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    """Every decision in order, one ``{"d": decision, "by", "ts"}`` each, from the commits' entries
    (``ds``: a batch's decisions in one entry)."""
    import msgspec

    out = []
    for _, f in r.xrange(f"{prefix}:decisions"):
        entry = msgspec.json.decode(f[b"d"])
        for d in entry["ds"] if "ds" in entry else [entry["d"]]:
            out.append({"d": d, "by": entry["by"], "ts": entry["ts"]})
    return out


def claim_log(r: redis.Redis, prefix: str) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(f"{prefix}:claims")]


def check_claim_log(log: list[dict[str, str]], caps: dict[str, int]) -> dict[str, int]:
    """Replay every claim and release in order: no agent over its cap, no conversation held by
    two agents at once. Returns the load of each agent at the end."""
    load: dict[str, int] = {a: 0 for a in caps}
    holder: dict[str, str] = {}
    for e in log:
        agent, conv = e["agent"], e["conv"]
        if e["op"] == "claim":
            assert conv not in holder, f"{conv} claimed by {agent} while held by {holder[conv]}"
            holder[conv] = agent
            load[agent] += 1
            assert load[agent] <= caps[agent], f"{agent} over its cap {caps[agent]}: {load[agent]}"
            assert int(e["load"]) == load[agent]
        else:
            assert holder.get(conv) == agent, f"{conv} released by {agent} but held by {holder.get(conv)}"
            del holder[conv]
            load[agent] -= 1
            assert int(e["load"]) == load[agent]
    return load


PASSWORD = "pw-1234"
_TEMPLATE: list[Path] = []


def accounts_db(db: Path, agents: list[str]) -> None:
    """An admin ``ops`` and one agent account ``ops:<agent>`` per agent (all shops), hashed once
    per session and copied (argon2 is slow on purpose)."""
    import shutil
    import sqlite3
    import tempfile

    from router.storage import accounts as acct
    from router.storage.store import Store

    key = ",".join(agents)
    found = [t for t in _TEMPLATE if t.name == f"{abs(hash(key))}.db"]
    if not found:
        template = Path(tempfile.mkdtemp(prefix="fenliu-redis-accounts-")) / f"{abs(hash(key))}.db"
        store = Store(template)

        def create(conn: sqlite3.Connection) -> None:
            acct.add(conn, "ops", PASSWORD, "admin", ("*",))
            for a in agents:
                acct.add(conn, f"ops:{a}", PASSWORD, "agent", ("*",), a)

        store.run_sync(create)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.close_sync()
        _TEMPLATE.append(template)
        found = [template]
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(found[0], db)


async def claims_applied(urls: list[str], r: redis.Redis, prefix: str, timeout: float = 10.0) -> None:
    """Wait until every instance has applied the claim log up to its last entry now (the
    announcements least load and round robin read), as its ``/healthz`` reports."""
    import aiohttp

    last = r.xrevrange(f"{prefix}:claims", count=1)
    if not last:
        return
    want = tuple(map(int, last[0][0].decode().split("-")))
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
        for url in urls:
            while True:
                async with http.get(f"{url}/healthz") as resp:
                    seen = (await resp.json())["claims_applied"]
                if tuple(map(int, seen.split("-"))) >= want:
                    break
                await asyncio.sleep(0.05)


async def routed_shards(urls: list[str]) -> list[list[int]]:
    """The shards each instance routes now, from its ``/healthz``."""
    import aiohttp

    out = []
    async with aiohttp.ClientSession() as http:
        for url in urls:
            async with http.get(f"{url}/healthz") as resp:
                body = await resp.json()
                assert body["backend"] == "redis"
                out.append(body["shards"])
    return out
