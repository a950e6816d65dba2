"""The Redis backend: routed messages per second with one and with two ``fenliu serve``
instances on the same Redis, and Redis round trips per routed message.

Each run gets a fresh key prefix (deleted afterwards), starts the instances as subprocesses on
loopback, waits until every shard has an owner, then posts signed batches round-robin across the
instances at a fixed concurrency. "ingest" is messages acknowledged (202) per second; "routed" is
messages per second until the last one's decision is in the decisions stream. Round trips are
counted by the instances themselves (``fenliu_redis_round_trips`` in /metrics, one per Lua call,
pipeline or command) and include the background loops (leases, blocking reads); "cmds" is Redis's
own ``INFO commandstats`` delta, which also counts the commands run inside the Lua scripts.

Every conversation gets ``--per-conv`` messages, so one in that many messages needs a claim.

    .venv/bin/python bench/bench_redis.py [--messages 12000] [--batch 20] [--concurrency 16] [--per-conv 4]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import save, show

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"
SHARDS = 8
SHOPS = [f"shop-{i}" for i in range(8)]
AGENTS = [f"a-{i:02d}" for i in range(20)]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
SHOWN = ("instances", "ingest/s", "routed/s", "rt/msg", "claim rt", "cmds/msg")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(root: Path, prefix: str) -> Path:
    cfg = root / "config"
    (cfg / "policies").mkdir(parents=True, exist_ok=True)
    (cfg / "fenliu.toml").write_text(f"""
[server]
host = "127.0.0.1"
max_batch = 100
max_body_bytes = 1048576
ingest_queue_max = 1000000

[storage]
backend = "redis"
path = "{root / 'unused.db'}"
redis_url = "{REDIS_URL}"
redis_prefix = "{prefix}"
shards = {SHARDS}

[plugins]
disabled = ["bot", "sensitive"]

[logging]
level = "warning"
""", encoding="utf-8")
    (cfg / "shops.toml").write_text("".join(
        f'[[shops]]\nid = "{s}"\nplatform = "pinduoduo"\nsecret_env = "FENLIU_BENCH_SECRET"\n\n' for s in SHOPS))
    (cfg / "agents.toml").write_text("".join(
        f'[[agents]]\nid = "{a}"\nskills = ["presale"]\nshops = ["*"]\nmax_concurrent = 1000\n\n' for a in AGENTS))
    (cfg / "policies" / "default.toml").write_text("""
[dispatch]
strategy = "round_robin"
sticky_hours = 0
accept_timeout_s = 3600
targets = [{ skills = ["presale"] }]
""")
    return cfg


def bodies(n: int, batch: int, per_conv: int, seed: int) -> list[tuple[str, bytes]]:
    """Signed batches of one shop each; a conversation's messages are spread over the run."""
    rng = random.Random(seed)
    convs = n // per_conv
    msgs = [(SHOPS[c % len(SHOPS)], f"b-{c}", k) for k in range(per_conv) for c in range(convs)]
    by_shop: dict[str, list[dict]] = {}
    for i, (shop, buyer, k) in enumerate(msgs):
        by_shop.setdefault(shop, []).append({"shop_id": shop, "msg_id": f"m-{i}", "buyer_id": buyer,
                                             "text": f"在吗?第{k}条:这件羽绒服有XL码吗"})
    out = []
    for shop, items in by_shop.items():
        for i in range(0, len(items), batch):
            body = msgspec.json.encode(items[i:i + batch])
            out.append((shop, body))
    rng.shuffle(out)
    out.sort(key=lambda b: int(msgspec.json.decode(b[1])[0]["msg_id"][2:]) // (batch * len(SHOPS)))
    return out


def spawn(cfg: Path, port: int, db: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "router", "serve", "--config", str(cfg), "--port", str(port),
                             "--store", str(db)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def round_trips(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in re.finditer(r'^fenliu_redis_round_trips_total\{op="(\w+)"\} ([0-9.e+]+)$', text, re.MULTILINE):
        out[m.group(1)] = float(m.group(2))
    return out


def commands(r: redis.Redis) -> int:
    return sum(v["calls"] for v in r.info("commandstats").values())


async def run(n_instances: int, args: argparse.Namespace, r: redis.Redis) -> dict:
    prefix = f"fenliu-bench-{secrets.token_hex(4)}"
    tmp = Path(tempfile.mkdtemp(prefix="fenliu-bench-redis-"))
    cfg = write_config(tmp, prefix)
    for a in AGENTS:
        r.hset(f"{prefix}:agent:{a}", "status", "online")
    env = {**os.environ, "FENLIU_BENCH_SECRET": SECRET, "FENLIU_LOG_LEVEL": "error"}
    procs, urls = [], []
    try:
        for i in range(n_instances):
            port = free_port()
            procs.append(spawn(cfg, port, tmp / f"node{i}.db", env))
            urls.append(f"http://127.0.0.1:{port}")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency * 2)) as http:
            async with asyncio.timeout(60):
                for url, proc in zip(urls, procs, strict=True):
                    while True:
                        assert proc.poll() is None, "an instance exited"
                        try:
                            async with http.get(f"{url}/healthz") as resp:
                                if resp.status == 200:
                                    break
                        except aiohttp.ClientError:
                            pass
                        await asyncio.sleep(0.1)
                while any(r.get(f"{prefix}:lease:{s}") is None for s in range(SHARDS)):
                    await asyncio.sleep(0.1)
            work = bodies(args.messages, args.batch, args.per_conv, seed=n_instances)
            total = sum(len(msgspec.json.decode(b)) for _, b in work)

            async def metrics() -> dict[str, float]:
                out: dict[str, float] = {}
                for url in urls:
                    async with http.get(f"{url}/metrics") as resp:
                        for op, v in round_trips(await resp.text()).items():
                            out[op] = out.get(op, 0.0) + v
                return out

            before, cmds0 = await metrics(), commands(r)
            queue = list(enumerate(work))
            statuses: dict[int, int] = {}
            t0 = time.perf_counter()

            async def worker() -> None:
                while queue:
                    i, (shop, body) = queue.pop()
                    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                    async with http.post(f"{urls[i % len(urls)]}/v1/shops/{shop}/messages", data=body,
                                         headers={"X-Fenliu-Signature": sig}) as resp:
                        await resp.read()
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1

            queue.reverse()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            t_ack = time.perf_counter()
            async with asyncio.timeout(120):
                while r.xlen(f"{prefix}:decisions") < total:
                    await asyncio.sleep(0.02)
            t_done = time.perf_counter()
            after, cmds1 = await metrics(), commands(r)
        assert statuses == {202: len(work)}, statuses
        delta = {op: after.get(op, 0.0) - before.get(op, 0.0) for op in after}
        rt = sum(delta.values())
        return {"instances": n_instances, "messages": total, "ingest/s": total / (t_ack - t0),
                "routed/s": total / (t_done - t0), "rt/msg": rt / total,
                **{f"{op} rt": v / total for op, v in sorted(delta.items())},
                "cmds/msg": (cmds1 - cmds0) / total}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            r.unlink(*keys[i:i + 500])
        shutil.rmtree(tmp, ignore_errors=True)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--per-conv", type=int, default=4)
    args = ap.parse_args()
    r = redis.Redis.from_url(REDIS_URL)
    try:
        r.ping()
    except redis.RedisError as exc:
        print(f"no Redis at {REDIS_URL}: {exc}", file=sys.stderr)
        return 1
    rows = [await run(1, args, r), await run(2, args, r)]
    show(f"Redis backend, {os.cpu_count()} cores, {args.messages} messages in batches of {args.batch}, "
         f"{args.per_conv} per conversation", [{k: row[k] for k in SHOWN} for row in rows])
    save("redis", rows, args=vars(args), cores=os.cpu_count())
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
