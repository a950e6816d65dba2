"""Signed ingest driven by wrk: ``fenliu serve`` against a bare aiohttp endpoint.

``bench_ingest.py`` drives both servers with a Python client, which costs about as much CPU per
request as the bare endpoint itself and shares the two cores with them, so its ratio is
compressed towards 1. wrk (C, one thread) costs a fraction of that. It replays pre-signed requests
from a file through a Lua script, each request once (a unique ``msg_id``: a resent one would be a
cheap duplicate), and the figure is Fenliu's requests/s over the bare endpoint's, per round, both
measured in the same round. The bare endpoint checks the signature and decodes the message
with msgspec (the same shape as ``bench_latency.py``'s), then answers ``202``.

wrk comes from Debian's packages: when it is missing and we run as root, ``apt-get install -y
wrk`` is tried; otherwise the benchmark says why it cannot run and exits 0 (skipped).

    .venv/bin/python bench/bench_wrk.py [--seconds 8] [--connections 64] [--rounds 3] [--batch 1] [--cpu]

``--cpu``: each server's CPU per request by process (the writer child too), and how much of the
time the busiest thread ran and waited for a core.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_ingest import SECRET, fenliu_config, free_port, wait_up  # noqa: E402
from bench.bench_latency import BARE, SHOPS  # noqa: E402
from bench.common import ProcessCPU, save, show, stop_processes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

#: Each wrk thread walks its own share of the file's requests (thread k takes lines k, k+n, …),
#: so no request is sent twice while the file lasts; the run stops when it is used up.
LUA = r"""
local lines = {}
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  local k = 0
  for line in io.lines(path) do
    if k % nthreads == id then
      local p1 = line:find("\t", 1, true)
      local p2 = line:find("\t", p1 + 1, true)
      table.insert(lines, {line:sub(1, p1 - 1), line:sub(p1 + 1, p2 - 1), line:sub(p2 + 1)})
    end
    k = k + 1
  end
  i = 0
  exhausted = 0
end

function request()
  i = i + 1
  if i > #lines then
    exhausted = 1
    i = 1
  end
  local r = lines[i]
  return wrk.format("POST", r[1], {["X-Fenliu-Signature"] = r[2], ["Content-Type"] = "application/json"}, r[3])
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    if t:get("exhausted") == 1 then
      io.write("EXHAUSTED\n")
    end
  end
  io.write(string.format("STATUS non2xx=%d\n", summary.errors.status))
end
"""


def ensure_wrk() -> str | None:
    """The wrk binary, installed from Debian's packages if we may; ``None`` when it cannot be had."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print("skipped: wrk is not installed and this is not root with apt-get (apt-get install wrk)")
        return None
    proc = subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"skipped: apt-get install wrk failed: {proc.stderr.strip()[-300:]}")
        return None
    return shutil.which("wrk")


def write_requests(path: Path, prefix: str, count: int, batch: int, seed: int) -> int:
    """``count`` requests of ``batch`` messages each as ``path\\tsignature\\tbody`` lines."""
    from adapters.simulator import Traffic

    traffic = Traffic(SHOPS, buyers=2000, seed=seed)
    n = 0
    with path.open("w", encoding="utf-8") as out:
        for r in range(count):
            shop = SHOPS[r % len(SHOPS)]
            msgs = []
            while len(msgs) < batch:
                m = traffic.next()
                if m["shop_id"] != shop:
                    continue
                m["msg_id"] = f"{prefix}-{n}"
                n += 1
                msgs.append(m)
            body = msgspec.json.encode(msgs[0] if batch == 1 else msgs)
            sig = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
            out.write(f"/v1/shops/{shop}/messages\t{sig}\t{body.decode()}\n")
    return count


def run_wrk(wrk: str, url: str, script: Path, requests: Path, *, seconds: float, connections: int,
            threads: int) -> tuple[float, bool, int]:
    """requests/s, whether the file ran out (resends would follow), and non-2xx answers."""
    proc = subprocess.run([wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "-s", str(script),
                           url, "--", str(requests), str(threads)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed: {proc.stderr or proc.stdout}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", proc.stdout)
    bad = re.search(r"STATUS non2xx=(\d+)", proc.stdout)
    if m is None:
        raise SystemExit(f"no Requests/sec in wrk's output:\n{proc.stdout}")
    return float(m.group(1)), "EXHAUSTED" in proc.stdout, int(bad.group(1)) if bad else -1


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=1, help="messages per request")
    p.add_argument("--max-rate", type=float, default=15000, help="requests/s to prepare for (unique bodies)")
    p.add_argument("--cpu", action="store_true", help="CPU per request and run-queue wait per server process")
    args = p.parse_args()

    wrk = ensure_wrk()
    if wrk is None:
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="fenliu-wrk-"))
    cfg = fenliu_config(tmp)
    env = {**os.environ, "FENLIU_LOG_LEVEL": "error", "PYTHONUNBUFFERED": "1"}
    for var in ("FENLIU_SECRET_PDD_1001", "FENLIU_SECRET_PDD_1002", "FENLIU_SECRET_TB_2001"):
        env[var] = SECRET.decode()
    fport, bport = free_port(), free_port()
    procs = {
        "fenliu serve": subprocess.Popen([sys.executable, "-m", "router", "serve", "--config", str(cfg), "--port",
                                          str(fport)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE),
        "bare aiohttp": subprocess.Popen([sys.executable, "-c", BARE, str(bport), SECRET.decode()], cwd=ROOT,
                                         env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE),
    }
    urls = {"fenliu serve": f"http://127.0.0.1:{fport}", "bare aiohttp": f"http://127.0.0.1:{bport}"}
    script = tmp / "signed.lua"
    script.write_text(LUA, encoding="utf-8")
    count = int(args.max_rate * args.seconds / args.batch) + 1000
    runs: dict[str, list[float]] = {name: [] for name in urls}
    notes: list[str] = []
    try:
        for name, url in urls.items():
            await wait_up(url, procs[name])
        for round_ in range(args.rounds):
            for name, url in urls.items():
                reqs = tmp / f"{name[:4]}-{round_}.tsv"
                write_requests(reqs, f"w{round_}-{name[:4]}", count, args.batch, seed=100 + round_)
                cpu = ProcessCPU(procs[name].pid)
                rps, exhausted, bad = run_wrk(wrk, url, script, reqs, seconds=args.seconds,
                                              connections=args.connections, threads=args.threads)
                usage = cpu.since(round(rps * args.seconds), args.seconds) if args.cpu else []
                reqs.unlink()
                runs[name].append(rps)
                if exhausted:
                    notes.append(f"round {round_} {name}: the requests ran out (raise --max-rate)")
                if bad:
                    notes.append(f"round {round_} {name}: {bad} non-2xx answers")
                print(f"round {round_}: {name} {rps:,.0f} requests/s ({rps * args.batch:,.0f} messages/s)", flush=True)
                for line in usage:
                    print(f"  {name} {line}", flush=True)
    finally:
        stop_processes(procs.values())
        shutil.rmtree(tmp, ignore_errors=True)

    per_round = [f / b for f, b in zip(runs["fenliu serve"], runs["bare aiohttp"], strict=True)]
    ratio = statistics.median(per_round)
    rows = [{"server": name, "median requests/s": statistics.median(rs), "messages/s": statistics.median(rs) * args.batch,
             "runs": " ".join(f"{r:,.0f}" for r in rs)} for name, rs in runs.items()]
    show(f"wrk, pre-signed ingest, {args.batch} message(s) a request, {args.connections} connections, "
         f"{args.seconds:g} s × {args.rounds} rounds", rows)
    for note in notes:
        print("note:", note)
    print(f"fenliu / bare, per round: {' '.join(f'{r:.2f}' for r in per_round)}; median {ratio:.2f} (goal ≥ 0.6)")
    save(f"wrk-batch{args.batch}", rows, ratio=ratio, per_round=per_round, seconds=args.seconds,
         connections=args.connections, batch=args.batch, notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
