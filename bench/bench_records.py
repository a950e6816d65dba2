"""What the PostgreSQL records store costs per routed message: the Redis backend's run of
bench_redis.py with ``storage.records = "sqlite"`` and with ``"postgres"``, one after the other
in one run (so the ratio, not the absolute figure, is what to read on a shared machine).

Per message: PostgreSQL round trips the instances made (``fenliu_pg_round_trips`` in /metrics,
by purpose: ``history`` is the batch's rows written before each Redis commit, ``outbox`` the
senders' polls), the instances' CPU, and the CPU of the PostgreSQL backends serving them (from
``/proc``, the backends of the benchmark's own database, followed while the run goes). The records store's cost in µs per
message is the difference in the instances' CPU plus the backends' CPU. Each run creates its own
database on the server at ``PG_ADMIN_URL`` (default: the local one) and drops it.

    .venv/bin/python bench/bench_records.py [--messages 12000] [--instances 1,2] [--shared]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_redis
from bench.common import save, show

ADMIN_URL = os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SHOWN = ("records", "instances", "routed/s", "rt/msg", "pg rt/msg", "pg history rt/msg", "cpu ms/msg", "pg cpu ms/msg")


def backends_cpu(dbname: str) -> dict[int, float]:
    """CPU seconds (user + system) of each PostgreSQL backend connected to ``dbname`` now."""
    out: dict[int, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if cmdline.startswith("postgres: ") and f" {dbname} " in cmdline:
                out[int(proc.name)] = bench_redis.cpu_seconds(int(proc.name))
        except (OSError, ValueError):
            continue
    return out


def pg_round_trips(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in re.finditer(r'^fenliu_pg_round_trips_total\{op="(\w+)"\} ([0-9.e+]+)$', text, re.MULTILINE):
        out[m.group(1)] = float(m.group(2))
    return out


async def run(records: str, n: int, args: argparse.Namespace, r: redis.Redis, redis_url: str) -> dict:
    """One bench_redis run with the records where ``records`` says: its configuration gets the
    lines, and a poller follows the instances' /metrics and their PostgreSQL backends' CPU while
    they run (bench_redis stops them as soon as the last decision is in)."""
    import aiohttp

    dbname = f"fenliu_bench_{secrets.token_hex(4)}"
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname
    plain_config, plain_spawn = bench_redis.write_config, bench_redis.spawn
    ports: list[int] = []
    trips: dict[str, dict[str, float]] = {}
    backends: dict[int, float] = {}

    def write_config(root: Path, prefix: str, redis_url: str) -> Path:
        cfg = plain_config(root, prefix, redis_url)
        if records == "postgres":
            main = (cfg / "fenliu.toml").read_text(encoding="utf-8")
            (cfg / "fenliu.toml").write_text(main.replace(
                "[storage]\n", f'[storage]\nrecords = "postgres"\npostgres_url = "{url}"\n', 1), encoding="utf-8")
        return cfg

    def spawn(cfg: Path, port: int, db: Path, env: dict[str, str]):  # noqa: ANN202 - bench_redis's
        ports.append(port)
        return plain_spawn(cfg, port, db, env)

    async def follow(stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                for port in list(ports):
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                            trips[str(port)] = pg_round_trips(await resp.text())
                    except aiohttp.ClientError:
                        pass
                backends.update(backends_cpu(dbname))
                await asyncio.sleep(0.2)

    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    bench_redis.write_config, bench_redis.spawn = write_config, spawn
    stop = asyncio.Event()
    poller = asyncio.create_task(follow(stop))
    try:
        row = await bench_redis.run(n, args, r, redis_url)
    finally:
        stop.set()
        await poller
        bench_redis.write_config, bench_redis.spawn = plain_config, plain_spawn
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    total = row["messages"]
    pg: dict[str, float] = {}
    for per in trips.values():
        for op, v in per.items():
            pg[op] = pg.get(op, 0.0) + v
    return {"records": records, **row, "pg rt/msg": sum(pg.values()) / total,
            "pg history rt/msg": pg.get("history", 0.0) / total,
            **{f"pg {op} rt/msg": v / total for op, v in sorted(pg.items())},
            "pg cpu ms/msg": 1000 * sum(backends.values()) / total}


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--per-conv", type=int, default=4)
    ap.add_argument("--instances", default="1,2", help="comma-separated instance counts, one pair of runs each")
    ap.add_argument("--shared", action="store_true", help="use REDIS_URL instead of a private redis-server")
    args = ap.parse_args()
    try:
        psycopg.connect(ADMIN_URL, connect_timeout=2).close()
    except psycopg.Error as exc:
        print(f"no PostgreSQL at {ADMIN_URL}: {exc}", file=sys.stderr)
        return 1
    private = None if args.shared or shutil.which("redis-server") is None else bench_redis.PrivateRedis()
    redis_url = private.url if private else bench_redis.REDIS_URL
    rows = []
    try:
        r = private.client() if private else redis.Redis.from_url(redis_url)
        for n in (int(x) for x in args.instances.split(",")):
            for records in ("sqlite", "postgres"):
                rows.append(await run(records, n, args, r, redis_url))
    finally:
        if private:
            private.stop()
    show(f"Records store cost, {os.cpu_count()} cores, {args.messages} messages in batches of {args.batch}, "
         f"{args.per_conv} per conversation (Redis backend)", [{k: row.get(k, 0.0) for k in SHOWN} for row in rows])
    for sq, pg in zip(rows[::2], rows[1::2], strict=True):
        extra = pg["cpu ms/msg"] - sq["cpu ms/msg"] + pg["pg cpu ms/msg"]
        print(f"{pg['instances']} instance(s): PostgreSQL costs {1000 * extra:.0f} µs of CPU per routed message "
              f"({1000 * (pg['cpu ms/msg'] - sq['cpu ms/msg']):.0f} in the instances, {1000 * pg['pg cpu ms/msg']:.0f} in "
              f"its backends), {pg['pg rt/msg']:.3f} round trips; routed/s {pg['routed/s'] / sq['routed/s']:.2f}x of SQLite records")
    save("records", rows, args=vars(args), cores=os.cpu_count())
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
