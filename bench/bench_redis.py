"""The Redis backend: Redis commands, round trips and instance CPU per routed message, and routed
messages per second with one and with two ``fenliu serve`` instances on the same Redis.

Each run gets a fresh key prefix (deleted afterwards), starts the instances as subprocesses on
loopback, waits until every shard has an owner, then posts signed batches round-robin across the
instances at a fixed concurrency. "ingest" is messages acknowledged (202) per second; "routed" is
messages per second until the last one's decision is in the decisions stream. Round trips are
counted by the instances themselves (``fenliu_redis_round_trips`` in /metrics, one per Lua call,
pipeline or command) and include the background loops (leases, blocking reads); "cmds" is Redis's
own ``INFO commandstats`` delta, which also counts the commands run inside the Lua scripts.
"cpu ms/msg" is the CPU time (user + system, from ``/proc``) the instances spent per routed
message, "redis cpu" Redis's own. On a 2-core machine shared by the load generator, Redis and the
instances, these per-message costs are what can be compared, not a two-instance speed-up.

The benchmark starts a private ``redis-server`` on a loopback port when one is installed, so the
command counts are this run's alone (a shared Redis counts everyone's); ``--shared`` uses
``REDIS_URL`` instead. Every conversation gets ``--per-conv`` messages, so one in that many
messages needs a claim.

    .venv/bin/python bench/bench_redis.py [--messages 12000] [--batch 20] [--concurrency 16] [--per-conv 4]
                                          [--instances 1,2] [--shared]
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

from bench.common import save, show, stop_processes

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"
SHARDS = 8
SHOPS = [f"shop-{i}" for i in range(8)]
AGENTS = [f"a-{i:02d}" for i in range(20)]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
BENCH_OWN = {"xrange", "info"}  # the benchmark's own polling; the instances do not send these while routing
SHOWN = ("instances", "ingest/s", "routed/s", "cmds/msg", "rt/msg", "claim rt", "msgs/commit", "cpu ms/msg",
         "redis cpu ms/msg")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(root: Path, prefix: str, redis_url: str) -> Path:
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
redis_url = "{redis_url}"
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


def commands(r: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in r.info("commandstats").items()}


class Decided:
    """Counts the decisions in the decisions stream as they arrive (one per entry, or a commit's
    batch in one entry: ``ds``), reading only the new entries."""

    def __init__(self, r: redis.Redis, prefix: str) -> None:
        self.r, self.key, self.last, self.total = r, f"{prefix}:decisions", "-", 0

    def __call__(self) -> int:
        for eid, f in self.r.xrange(self.key, min=self.last, count=1000):
            if eid == self.last:
                continue
            self.last = eid
            entry = msgspec.json.decode(f[b"d"])
            self.total += len(entry["ds"]) if "ds" in entry else 1
        return self.total


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (``/proc/{pid}/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PrivateRedis:
    """A throw-away ``redis-server`` (no persistence) on a free loopback port, so that ``INFO
    commandstats`` counts this benchmark's commands only."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self) -> redis.Redis:
        r = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                r.ping()
                return r
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("the private redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


async def run(n_instances: int, args: argparse.Namespace, r: redis.Redis, redis_url: str) -> dict:
    prefix = f"fenliu-bench-{secrets.token_hex(4)}"
    tmp = Path(tempfile.mkdtemp(prefix="fenliu-bench-redis-"))
    cfg = write_config(tmp, prefix, redis_url)
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

            before, cmds0, rcpu0 = await metrics(), commands(r), redis_cpu(r)
            cpu0 = sum(cpu_seconds(p.pid) for p in procs)
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
                decided = Decided(r, prefix)
                while decided() < total:
                    await asyncio.sleep(0.02)
            t_done = time.perf_counter()
            cpu1 = sum(cpu_seconds(p.pid) for p in procs)
            after, cmds1, rcpu1 = await metrics(), commands(r), redis_cpu(r)
        assert statuses == {202: len(work)}, statuses
        delta = {op: after.get(op, 0.0) - before.get(op, 0.0) for op in after}
        rt = sum(delta.values())
        by_command = {c: (n - cmds0.get(c, 0)) / total for c, n in sorted(cmds1.items())
                      if n > cmds0.get(c, 0) and c not in BENCH_OWN}
        return {"instances": n_instances, "messages": total, "ingest/s": total / (t_ack - t0),
                "routed/s": total / (t_done - t0), "rt/msg": rt / total,
                **{f"{op} rt": v / total for op, v in sorted(delta.items())},
                "msgs/commit": total / max(1.0, delta.get("commit", 0.0)),
                "cmds/msg": sum(by_command.values()), "by command": by_command,
                "cpu ms/msg": 1000 * (cpu1 - cpu0) / total, "redis cpu ms/msg": 1000 * (rcpu1 - rcpu0) / total}
    finally:
        stop_processes(procs, timeout=15)
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
    ap.add_argument("--instances", default="1,2", help="comma-separated instance counts, one run each")
    ap.add_argument("--shared", action="store_true", help="use REDIS_URL (its command counts include other clients)")
    args = ap.parse_args()
    private = None if args.shared or shutil.which("redis-server") is None else PrivateRedis()
    url = private.url if private else REDIS_URL
    try:
        r = private.client() if private else redis.Redis.from_url(url)
        try:
            r.ping()
        except redis.RedisError as exc:
            print(f"no Redis at {url}: {exc}", file=sys.stderr)
            return 1
        rows = [await run(int(n), args, r, url) for n in args.instances.split(",")]
    finally:
        if private:
            private.stop()
    show(f"Redis backend ({'private redis-server' if private else url}), {os.cpu_count()} cores, {args.messages} "
         f"messages in batches of {args.batch}, {args.per_conv} per conversation",
         [{k: row[k] for k in SHOWN} for row in rows])
    for row in rows:
        print(f"{row['instances']} instance(s), commands per message:",
              ", ".join(f"{c} {v:.2f}" for c, v in sorted(row["by command"].items(), key=lambda x: -x[1])))
    save("redis", rows, args=vars(args), cores=os.cpu_count(), redis="private" if private else "shared")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
