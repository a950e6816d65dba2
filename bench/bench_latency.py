"""The latency a buyer feels: an open-loop client against ``fenliu serve`` and a bare endpoint.

A closed-loop client (a fixed number of workers, each waiting for its answer) slows down when the
server does, so it never sends the requests a stall would have delayed, and its percentiles hide
the stall (coordinated omission). Here requests are scheduled by the clock at a constant rate,
and each latency is measured from its *scheduled* send time, so a stall counts for every request
that should have gone out during it.

The run, all on loopback with the demo config (business hours and shifts removed, so any hour
routes to people), every agent logged in and holding its WebSocket (accepting and closing each
conversation it is given at once):

1. the maximum ingest rate: a closed-loop client with ``--concurrency`` workers, requests/s;
2. at 50 % and 80 % of that rate, open-loop for ``--seconds``: p50/p99/p99.9 of the ``202``,
   and of ingest → the agent's ``assigned`` frame (from the scheduled send time of the message
   that caused it, the buyer's newest in the frame's history, to the frame's arrival). Frames
   of conversations that found every agent full and waited in the queue are the ``→ queued``
   row: that wait is for a person, not for the service. The demo's agents (37 places in all)
   fill up once each conversation's round of ``assigned``, accept and close takes long enough
   (above ≈ 1,000 requests/s here): then most conversations queue and ``→ assigned`` times only
   the few that found a free agent (44 frames in an 80 % run). ``--capacity N`` gives every
   agent N places, so nothing waits for one (and each conversation costs its accept and close);
3. the same client at the same rates against a bare aiohttp endpoint that checks the signature,
   decodes the message with msgspec and answers ``202``: the reference for what the client,
   aiohttp and the machine cost on their own.

The load generator is a separate process (its own event loop and core), the agents live in the
benchmark's process; it opens its connections before its schedule starts, and writes each
request as bytes made and signed beforehand, on keep-alive connections with one request in flight
each (:class:`_Connection`, a small HTTP/1.1 client: with aiohttp's the generator fell 95-118 ms
behind its schedule at 80 % on this 2-core machine, and with this one 8-24 ms at a 1.7× higher
rate, the closed-loop maximum itself 1.7× higher since the client takes less of the cores). Run it twice: the
machine is shared and a tail is the first thing noise moves (``--dir /dev/shm`` takes the disk
out of it). ``--rates`` sets absolute rates instead of fractions of the measured maximum.

``--probe`` says what the server's tail is made of, run by run: its garbage collections by
generation and its event-loop callbacks over 5 ms (a routing step, a request, a fork), each in
wall-clock time and in CPU time of the loop's thread. On a shared machine the wall time of a
pause includes the time the process waited for a core; the CPU time does not, so it tells the
server's own pauses from the machine's noise. A collection runs inside whatever callback
allocated last, so the longest callback is also given without the collectors' CPU time in it
(the loop's own longest step). A heartbeat every 5 ms on the server's loop shows the waits no
callback explains: one that comes over 10 ms late while the loop's thread used little CPU is
the server waiting for a core (or in a system call). (A ``sitecustomize`` given to the server
only; in the journal writer child it times each transaction over 10 ms, with the CPU of its
thread, the time it was runnable but waiting for a core (``runq``, from schedstat), its rows and
the WAL file's size in pages.) Every open-loop run also says how late the client itself got round to sending
(``client sent late``): an open-loop client on a shared machine falls behind its schedule too,
and that lateness is in every latency it reports.

    .venv/bin/python bench/bench_latency.py [--seconds 10] [--concurrency 64] [--fractions 0.5 0.8] [--probe]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_ingest import SECRET, fenliu_config, free_port, wait_up  # noqa: E402
from bench.common import save, stop_processes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHOPS = ["pdd-1001", "pdd-1002", "tb-2001"]
PASSWORD = "bench-latency-pw"

BARE = """
import hashlib, hmac, sys
import msgspec
from aiohttp import web
from router.core.models import Message

SECRET = sys.argv[2].encode()
decode = msgspec.json.Decoder(Message).decode
decode_many = msgspec.json.Decoder(list[Message]).decode

async def ingest(request):
    body = await request.read()
    want = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, request.headers.get("X-Fenliu-Signature", "")):
        return web.json_response({"error": "signature"}, status=401)
    try:
        msgs = decode_many(body) if body[:1] == b"[" else [decode(body)]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    if any(m.shop_id != request.match_info["shop_id"] for m in msgs):
        return web.json_response({"error": "shop"}, status=400)
    return web.json_response({"accepted": len(msgs), "duplicates": 0}, status=202)

async def health(request):
    return web.json_response({"status": "ok"})

app = web.Application()
app.router.add_post("/v1/shops/{shop_id}/messages", ingest)
app.router.add_get("/healthz", health)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


#: ``--probe``: loaded by the server's interpreter (``sitecustomize``); appends one line per GC
#: pause and per slow loop callback to ``$FENLIU_LATENCY_PROBE``, stamped with ``time.monotonic``.
PROBE = """
import os, sys
OUT = os.environ.get("FENLIU_LATENCY_PROBE")
if OUT and "serve" in sys.argv:
    import asyncio, asyncio.events, gc, time
    clock, cpu = time.monotonic, time.thread_time
    out = open(OUT, "a", buffering=1)
    started = [0.0, 0.0]
    collector = [0.0]  # CPU time in collections so far: a callback's own work is its CPU less this

    def on_gc(phase, info):
        if phase == "start":
            started[:] = clock(), cpu()
        else:
            spent = cpu() - started[1]
            collector[0] += spent
            out.write(f"{clock():.4f} gc{info['generation']} {(clock() - started[0]) * 1000:.2f} "
                      f"{spent * 1000:.2f} {info['collected']}\\n")

    gc.callbacks.append(on_gc)
    run = asyncio.events.Handle._run

    def timed(self):
        t, c, g = clock(), cpu(), collector[0]
        run(self)
        wall = clock() - t
        if wall > 0.005:
            fn = self._callback
            task = next((r for r in gc.get_referents(fn) if isinstance(r, asyncio.Task)), None)
            name = getattr(task.get_coro(), "__qualname__", "?") if task else getattr(fn, "__qualname__", "?")
            used = cpu() - c
            out.write(f"{clock():.4f} stall {wall * 1000:.2f} {used * 1000:.2f} {name} "
                      f"{(used - (collector[0] - g)) * 1000:.2f}\\n")

    asyncio.events.Handle._run = timed

    # A heartbeat every 5 ms: one that comes late while no callback was long, and while the
    # loop's thread used little CPU, is the process waiting outside the loop (for a core, or in
    # a system call), which no callback timing shows.
    beat_at = [0.0, 0.0]

    def beat(loop):
        now, used = clock(), cpu()
        late = now - beat_at[0]
        if late > 0.01:
            out.write(f"{now:.4f} late {late * 1000:.2f} {(used - beat_at[1]) * 1000:.2f}\\n")
        beat_at[:] = now + 0.005, used
        loop.call_at(beat_at[0], beat, loop)

    first = timed

    def timed_first(self):
        asyncio.events.Handle._run = first
        loop = asyncio.events._get_running_loop()
        if loop is not None:
            beat_at[:] = clock() + 0.005, cpu()
            loop.call_at(beat_at[0], beat, loop)
        first(self)

    asyncio.events.Handle._run = timed_first

    # A commit's round trip as the server sees it (submitted -> its answer handled), when over 20 ms.
    sys.path.insert(0, os.environ["FENLIU_PROBE_WRITER"])  # the benchmark's tree, not the installed one
    from router.storage import writer as _w

    submit, answered = _w.JournalWriter.submit, _w.JournalWriter._answered
    sent = {}

    def timed_submit(self, rows, done=None):
        submit(self, rows, done)
        sent[self._next_id] = clock()

    def timed_answered(self, answers):
        now = clock()
        for batch_id, _ids, _error in answers:
            at = sent.pop(batch_id, None)
            if at is not None and now - at > 0.02:
                out.write(f"{now:.4f} commit {(now - at) * 1000:.2f} 0\\n")
        answered(self, answers)

    _w.JournalWriter.submit, _w.JournalWriter._answered = timed_submit, timed_answered
elif OUT and sys.argv == ["-c"] and os.environ.get("FENLIU_PROBE_WRITER"):
    # The journal writer child: its transactions, and the checkpoints on its commit path
    # (finish_up) and on its thread, when over 10 ms.
    import threading, time
    sys.path.insert(0, os.environ["FENLIU_PROBE_WRITER"])
    from router.storage import writer as _w

    clock, out = time.monotonic, open(OUT, "a", buffering=1)

    def timing(kind, fn):
        def timed(*args, **kwargs):
            t = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                took = clock() - t
                if took > 0.01:
                    out.write(f"{clock():.4f} {kind} {took * 1000:.2f} 0\\n")
        return timed

    # A transaction's wall time split: CPU of the writer's thread, and time it was runnable but
    # waiting for a core (schedstat); the rest it was blocked (the disk, a lock). Its rows too.
    commit_group = _w._commit_group
    stat = f"/proc/self/task/{threading.get_native_id()}/schedstat" if os.path.exists("/proc/self/task") else None

    def queued():
        if stat is None:
            return 0.0
        with open(stat) as f:
            return int(f.read().split()[1]) / 1e9

    wal = []

    def wal_size():
        try:
            return os.path.getsize(wal[0]) // 4096
        except OSError:
            return -1

    def timed_commit(conn, batches):
        if not wal:
            wal.append(conn.execute("PRAGMA database_list").fetchone()[2] + "-wal")
        t, c, q, size = clock(), time.thread_time(), queued(), wal_size()
        try:
            return commit_group(conn, batches)
        finally:
            took = clock() - t
            if took > 0.01:
                used, waited = time.thread_time() - c, queued() - q
                out.write(f"{clock():.4f} w-commit {took * 1000:.2f} {used * 1000:.2f} "
                          f"rows={sum(len(r) for _, r in batches)}/runq={waited * 1000:.1f}/walfile={size}->{wal_size()} "
                          f"{used * 1000:.2f}\\n")

    _w._commit_group = timed_commit
    _w._write_frame = timing("w-answer", _w._write_frame)
    _w._Checkpointer.finish_up = timing("w-finish", _w._Checkpointer.finish_up)
    _w._Checkpointer.checkpoint = timing("w-ckpt", _w._Checkpointer.checkpoint)
"""


def probe_summary(path: Path, start: float, end: float) -> dict:
    """The server's pauses between ``start`` and ``end`` (monotonic): per kind, how many, the
    longest in wall time and in CPU time, ms."""
    kinds: dict[str, list[tuple[float, float, str, float]]] = {}
    if path.exists():
        for line_ in path.read_text().splitlines():
            at, kind, wall, cpu, *rest = line_.split()
            if start <= float(at) <= end:
                name, own = (rest[0], float(rest[1])) if len(rest) > 1 else ("", float(cpu))
                kinds.setdefault(kind, []).append((float(wall), float(cpu), name, own))
    out = {}
    for kind, v in sorted(kinds.items()):
        worst = max(v, key=lambda r: r[3])
        out[kind] = {"n": len(v), "max_wall": max(v)[0], "max_cpu": max(r[1] for r in v), "longest": max(v)[2],
                     "cpu_of_longest": max(v)[1],
                     "total_cpu": sum(r[1] for r in v), "max_own": worst[3], "own_longest": worst[2]}
    return out


def worst_moments(path: Path, latency_ms: list[float], start: float, rate: float, n: int = 3) -> str:
    """The ``n`` slowest requests at least 0.5 s apart, each with what the probe logged between
    its scheduled send and its answer: what a tail request waited for."""
    order = sorted((v, i) for i, v in enumerate(latency_ms) if v == v)[::-1]
    picked: list[tuple[float, int]] = []
    for v, i in order:
        if all(abs(i - j) / rate > 0.5 for _, j in picked):
            picked.append((v, i))
        if len(picked) == n:
            break
    events = [ln.split() for ln in path.read_text().splitlines()] if path.exists() else []
    out = []
    for v, i in picked:
        due = start + i / rate
        seen = [f"{e[1]} {float(e[2]):.0f}" + (f"/{float(e[3]):.0f}cpu" if e[1] in ("stall", "late", "w-commit")
                                                or e[1].startswith("gc") else "")
                + (f" {e[4]}" if e[1] in ("stall", "w-commit") and len(e) > 4 else "")
                for e in events if due - 0.05 <= float(e[0]) <= due + v / 1000]
        out.append(f"{'':>12} {'worst':>11}  {v:.0f} ms at +{i / rate:.2f} s: " + (", ".join(seen[:12]) or "nothing logged"))
    return "\n".join(out)


def probe_line(summary: dict) -> str:
    parts = [f"{kind} n={v['n']} max {v['max_wall']:.1f} ms ({v['max_cpu']:.1f} CPU)" for kind, v in summary.items()
             if kind not in ("stall", "late") and not kind.startswith(("w-", "commit"))]
    for kind in sorted(k for k in summary if k.startswith(("w-", "commit"))):
        v = summary[kind]
        parts.append(f"{kind} > {20 if kind == 'commit' else 10} ms n={v['n']} max {v['max_wall']:.1f} ms")
    late = summary.get("late")
    if late:
        parts.append(f"heartbeat late > 10 ms n={late['n']} max {late['max_wall']:.1f} ms "
                     f"({late['cpu_of_longest']:.1f} CPU in its window)")
    st = summary.get("stall")
    if st:
        parts.append(f"loop callbacks > 5 ms n={st['n']} max {st['max_wall']:.1f} ms ({st['max_cpu']:.1f} CPU, "
                     f"{st['longest']}); without the collector's share max {st['max_own']:.1f} CPU ({st['own_longest']})")
    return f"{'':>12} {'server':>11}  " + ("; ".join(parts) or "no GC and no callback over 5 ms")


# -- the load generator (a child process) ----------------------------------------------------------


def _bodies(prefix: str, count: int, seed: int) -> list[tuple[str, bytes, str]]:
    from adapters.simulator import Traffic

    traffic = Traffic(SHOPS, buyers=2000, seed=seed)
    out = []
    for i in range(count):
        m = traffic.next()
        m["msg_id"] = f"{prefix}-{i}"
        body = msgspec.json.encode(m)
        out.append((m["shop_id"], body, "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()))
    return out


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight, as a client
    connection pool has: the request's bytes are written as prepared, and the answer's status is
    handed to ``done`` from the callback that reads it. The load generator shares two cores with
    the server: with aiohttp's client (≈ 200 µs of CPU a request) it fell 45-95 ms behind its own
    schedule at 80 %, and that lateness was in every latency it reported."""

    def __init__(self, idle: list[_Connection]) -> None:
        self.idle = idle
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.done: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, request: bytes, done: Any) -> None:
        self.done = done
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(buffer[:head_end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:  # not an answer this client can read: the connection is dropped
            self._fail()
            return
        eol = head.find(b"\r\n", at + 2)
        length = int(head[at + 17:eol if eol >= 0 else len(head)])
        if len(buffer) < head_end + 4 + length:
            return
        status = int(head[9:12])
        del buffer[:head_end + 4 + length]
        done, self.done = self.done, None
        if done is None:  # an answer to nothing this client asked (say, a timeout): not reusable
            self._fail()
            return
        self.idle.append(self)
        done(status)

    def _fail(self) -> None:
        done, self.done = self.done, None
        if self.transport is not None:
            self.transport.close()
        if done is not None:
            done(0)

    def connection_lost(self, exc: Exception | None) -> None:
        self.idle[:] = [c for c in self.idle if c is not self]
        self.transport = None
        done, self.done = self.done, None
        if done is not None:
            done(0)


async def _generate(args: argparse.Namespace) -> dict:
    """Open loop (``rate`` > 0): request ``i`` is due at ``start + i / rate``, and goes out on an
    idle connection (a new one if none is idle, its handshake counted). Closed loop (``rate`` =
    0): ``concurrency`` workers for ``seconds``. Requests are whole byte strings made and signed
    before the schedule starts."""
    count = int(args.rate * args.seconds) if args.rate else int(args.seconds * 10000)
    host, port = args.url.removeprefix("http://").rsplit(":", 1)
    requests = [(f"POST /v1/shops/{shop}/messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
                 f"Content-Type: application/json\r\nX-Fenliu-Signature: {sig}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n").encode() + body
                for shop, body, sig in _bodies(args.prefix, count, args.seed)]
    lat: list[float] = [float("nan")] * count
    began: list[float] = [float("nan")] * count  # when the client got round to sending it
    status: dict[int, int] = {}
    loop = asyncio.get_running_loop()
    idle: list[_Connection] = []
    clock = time.monotonic

    async def connect() -> _Connection:
        _, conn = await loop.create_connection(lambda: _Connection(idle), host, int(port))
        return conn

    # Connections opened before the schedule starts: a platform's webhooks keep theirs alive, and
    # without this the run's first few hundred milliseconds timed TCP handshakes.
    idle.extend(await asyncio.gather(*(connect() for _ in range(args.concurrency))))
    outstanding = [0]
    finished: list[asyncio.Future | None] = [None]  # awaited once the schedule is through

    def answered(i: int, code: int) -> None:
        lat[i] = clock()
        status[code] = status.get(code, 0) + 1
        outstanding[0] -= 1
        if not outstanding[0] and finished[0] is not None and not finished[0].done():
            finished[0].set_result(None)

    async def send_on_new(i: int, done: Any) -> None:
        try:
            conn = await connect()
        except OSError:
            done(0)
            return
        conn.send(requests[i], done)

    def post(i: int, done: Any) -> None:
        began[i] = clock()
        outstanding[0] += 1
        while idle and not idle[-1].usable():  # closed by the server while idle
            idle.pop()
        if idle:
            idle.pop().send(requests[i], done)
        else:
            tasks.add(task := loop.create_task(send_on_new(i, done)))
            task.add_done_callback(tasks.discard)

    tasks: set[asyncio.Task] = set()
    start = clock() + 0.3  # the schedule starts once every request is made and signed
    await asyncio.sleep(max(0.0, start - clock()))
    if args.rate:
        i = 0
        while i < count:
            now = clock()
            while i < count and start + i / args.rate <= now:
                post(i, functools.partial(answered, i))
                i += 1
            if i < count:
                await asyncio.sleep(max(0.0, start + i / args.rate - clock()))
        if outstanding[0]:
            finished[0] = loop.create_future()
            await finished[0]
        sent = count
        lat = [(done - (start + i / args.rate)) * 1000 for i, done in enumerate(lat)]
        lag = [(b - (start + i / args.rate)) * 1000 for i, b in enumerate(began)]
        elapsed = clock() - start
    else:
        it = iter(range(count))
        deadline = start + args.seconds
        sent = 0

        async def worker() -> None:
            nonlocal sent
            for i in it:
                if clock() >= deadline:
                    return
                sent += 1
                waiter = loop.create_future()
                post(i, lambda code, i=i, waiter=waiter: (answered(i, code), waiter.set_result(None)))
                await waiter

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = clock() - start
        lat = []
        lag = []
    for conn in idle:
        if conn.transport is not None:
            conn.transport.close()
    return {"sent": sent, "elapsed": elapsed, "status": status, "latency_ms": lat, "start": start, "lag_ms": lag}


def generate_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url")
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--seconds", type=float)
    p.add_argument("--prefix")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args(argv)
    result = asyncio.run(_generate(args))
    sys.stdout.write(json.dumps(result))
    return 0


# -- agents --------------------------------------------------------------------------------------


class Agents:
    """Every agent of the config logged in, holding its socket; each ``assigned`` frame caused by
    a message is timed (arrival, by the message that caused it) and closed at once."""

    def __init__(self, url: str, agent_ids: list[str]) -> None:
        self.url = url
        self.agent_ids = agent_ids
        self.arrivals: dict[str, float] = {}
        #: assigned when an agent made room (``queue_drain``): the wait for a person, not the service
        self.drained: dict[str, float] = {}
        self.tasks: list[asyncio.Task] = []
        self.http: aiohttp.ClientSession | None = None
        self.ready = 0

    async def start(self) -> None:
        self.http = aiohttp.ClientSession()
        self.tasks = [asyncio.create_task(self._agent(aid)) for aid in self.agent_ids]
        for _ in range(200):
            if self.ready == len(self.agent_ids):
                return
            await asyncio.sleep(0.05)
        raise SystemExit(f"only {self.ready} of {len(self.agent_ids)} agents connected")

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.close()

    async def _agent(self, aid: str) -> None:
        http = self.http
        assert http is not None
        async with http.post(f"{self.url}/v1/auth/login", json={"account": f"bench:{aid}", "password": PASSWORD}) as r:
            token = (await r.json())["token"]
        async with http.post(f"{self.url}/v1/auth/ws-ticket", headers={"Authorization": f"Bearer {token}"}) as r:
            ticket = (await r.json())["ticket"]
        decode = msgspec.json.decode
        async with http.ws_connect(f"{self.url.replace('http', 'ws')}/v1/agents/ws?ticket={ticket}",
                                   max_msg_size=0) as ws:
            self.ready += 1
            async for frame in ws:
                now = time.monotonic()
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = decode(frame.data)
                if data.get("type") != "assigned":
                    continue
                cid = data["conversation_id"]
                cause = data.get("cause", "message")  # the default, left out of the frame
                if cause in ("message", "queue_drain"):
                    # the message that caused it: the newest of the buyer's (an older one may have
                    # waited in the queue or with the bot; that wait is not this message's latency)
                    last = next((h.get("msg_id") for h in reversed(data.get("history", ())) if h.get("who") == "buyer"),
                                None)
                    if last:
                        (self.arrivals if cause == "message" else self.drained).setdefault(last, now)
                if data.get("state") == "reserved":
                    await ws.send_str(json.dumps({"type": "accept", "conversation_id": cid}))
                await ws.send_str(json.dumps({"type": "close", "conversation_id": cid}))


# -- the run --------------------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "p99.9": float("nan"), "max": float("nan")}
    a = np.asarray(values)
    return {"n": len(values), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "p99.9": float(np.percentile(a, 99.9)), "max": float(a.max())}


def line(row: dict) -> str:
    lag = row.get("client_lag")
    return (f"{row['server']:>12} {row['load']:>11} {row['rate/s']:7,.0f}/s {row['what']:>10}  n={row['n']:<6} "
            f"p50 {row['p50']:7.1f}  p99 {row['p99']:7.1f}  p99.9 {row['p99.9']:7.1f}  max {row['max']:7.1f}  "
            f"{row['statuses']}" + (f"  (client sent late: p99 {lag['p99']:.1f}, max {lag['max']:.1f})" if lag else ""))


async def generate(url: str, *, rate: float, seconds: float, prefix: str, seed: int, concurrency: int) -> dict:
    cmd = [sys.executable, __file__, "--generate", "--url", url, "--rate", str(rate), "--seconds", str(seconds),
           "--prefix", prefix, "--seed", str(seed), "--concurrency", str(concurrency)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, cwd=ROOT)
    out, _ = await proc.communicate()
    if proc.returncode:
        raise SystemExit(f"load generator failed ({proc.returncode})")
    return json.loads(out)


def bench_config(tmp: Path, snapshot_every: int | None = None, capacity: int | None = None) -> Path:
    """The demo config, open at any hour (with ``capacity`` as every agent's ``max_concurrent``
    if given), and an agent account per agent in its store."""
    from router.storage import accounts as acct
    from router.core.config import load_config
    from router.storage.store import Store

    cfg = fenliu_config(tmp)
    for name, key in (("shops.toml", "business_hours"), ("agents.toml", "schedule")):
        path = cfg / name
        path.write_text(re.sub(rf"(?m)^{key} = .*\n", "", path.read_text(encoding="utf-8")), encoding="utf-8")
    if capacity is not None:
        path = cfg / "agents.toml"
        path.write_text(re.sub(r"(?m)^max_concurrent = \d+$", f"max_concurrent = {capacity}",
                               path.read_text(encoding="utf-8")), encoding="utf-8")
    if snapshot_every is not None:
        path = cfg / "fenliu.toml"
        path.write_text(path.read_text(encoding="utf-8").replace("[storage]\n", f"[storage]\nsnapshot_every = {snapshot_every}\n"),
                        encoding="utf-8")
    config = load_config(cfg)
    store = Store(config.main.storage.path)
    try:
        def create(conn) -> None:
            acct.add(conn, "bench", PASSWORD, "admin", ("*",))
            for aid, agent in config.agents.items():
                acct.add(conn, f"bench:{aid}", PASSWORD, "agent", None, aid, tuple(agent.shops))
        store.run_sync(create)
    finally:
        store.close_sync()
    return cfg


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="length of each open-loop run")
    p.add_argument("--max-seconds", type=float, default=8.0, help="length of the closed-loop run for the maximum")
    p.add_argument("--concurrency", type=int, default=64, help="workers of the closed-loop run")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.8])
    p.add_argument("--rates", type=float, nargs="*", help="absolute rates (requests/s) instead of fractions")
    p.add_argument("--no-bare", action="store_true", help="skip the bare endpoint")
    p.add_argument("--probe", action="store_true", help="the server's GC pauses and loop stalls per run")
    p.add_argument("--snapshot-every", type=int, help="storage.snapshot_every (default: the demo's, 100,000)")
    p.add_argument("--capacity", type=int, help="max_concurrent of every agent (default: the demo's, 3-8)")
    p.add_argument("--dir", help="where the store and config go (default: the system's temporary directory); "
                                 "/dev/shm takes the disk out of the measurement")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="fenliu-latency-", dir=args.dir))
    env = {**os.environ, "FENLIU_LOG_LEVEL": "error", "PYTHONUNBUFFERED": "1"}
    for var in ("FENLIU_SECRET_PDD_1001", "FENLIU_SECRET_PDD_1002", "FENLIU_SECRET_TB_2001"):
        env[var] = SECRET.decode()
    cfg = bench_config(tmp, args.snapshot_every, args.capacity)
    from router.core.config import load_config

    agent_ids = sorted(load_config(cfg).agents)
    fport, bport = free_port(), free_port()
    fenv = dict(env)
    probe = tmp / "probe.txt"
    if args.probe:
        (tmp / "probe").mkdir()
        (tmp / "probe" / "sitecustomize.py").write_text(PROBE, encoding="utf-8")
        fenv["PYTHONPATH"] = os.pathsep.join(filter(None, (str(tmp / "probe"), env.get("PYTHONPATH"))))
        fenv["FENLIU_LATENCY_PROBE"] = str(probe)
        fenv["FENLIU_PROBE_WRITER"] = str(ROOT)
    fenliu = subprocess.Popen([sys.executable, "-m", "router", "serve", "--config", str(cfg), "--port", str(fport)],
                              cwd=ROOT, env=fenv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    bare = subprocess.Popen([sys.executable, "-c", BARE, str(bport), SECRET.decode()], cwd=ROOT,
                            env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    furl, burl = f"http://127.0.0.1:{fport}", f"http://127.0.0.1:{bport}"
    rows: list[dict] = []
    agents = Agents(furl, agent_ids)
    try:
        await wait_up(furl, fenliu)
        await wait_up(burl, bare)
        await agents.start()
        await generate(furl, rate=0, seconds=2, prefix="warm", seed=1, concurrency=args.concurrency)
        top = await generate(furl, rate=0, seconds=args.max_seconds, prefix="max", seed=2,
                             concurrency=args.concurrency)
        ok = top["status"].get("202", 0)
        max_rate = ok / top["elapsed"]
        print(f"maximum (closed loop, {args.concurrency} workers, {args.max_seconds:g} s): {max_rate:,.0f} requests/s "
              f"(statuses {top['status']})", flush=True)
        rates = args.rates or [max_rate * f for f in args.fractions]
        for n, rate in enumerate(rates):
            label = f"{rate / max_rate:.0%} of max" if not args.rates else f"{rate:,.0f}/s"
            for name, url in (("fenliu serve", furl), ("bare aiohttp", burl)):
                if name == "bare aiohttp" and args.no_bare:
                    continue
                prefix = f"r{n}-{name[:4]}"
                res = await generate(url, rate=rate, seconds=args.seconds, prefix=prefix, seed=10 + n,
                                     concurrency=args.concurrency)
                lat = [v for v in res["latency_ms"] if v == v]
                lag = percentiles([v for v in res["lag_ms"] if v == v])
                row = {"server": name, "load": label, "rate/s": rate, "what": "202", **percentiles(lat),
                       "statuses": " ".join(f"{k}:{v}" for k, v in sorted(res["status"].items())),
                       "client_lag": {"p99": lag["p99"], "max": lag["max"]}}
                rows.append(row)
                if name == "fenliu serve":
                    await asyncio.sleep(0.5)  # the last frames
                    start = res["start"]
                    if args.probe:
                        row["probe"] = probe_summary(probe, start, start + res["elapsed"])
                        row["worst"] = worst_moments(probe, res["latency_ms"], start, rate)
                    for what, arrivals in (("→ assigned", agents.arrivals), ("→ queued", agents.drained)):
                        assigned = []
                        for msg_id, at in arrivals.items():
                            if msg_id.startswith(prefix + "-"):
                                i = int(msg_id.rsplit("-", 1)[1])
                                assigned.append((at - (start + i / rate)) * 1000)
                        rows.append({"server": name, "load": label, "rate/s": rate, "what": what,
                                     **percentiles(assigned), "statuses": ""})
                for row in rows[-3:] if name == "fenliu serve" else rows[-1:]:
                    print(line(row), flush=True)
                if name == "fenliu serve" and args.probe:
                    print(probe_line(rows[-3]["probe"]), flush=True)
                    print(rows[-3]["worst"], flush=True)
    finally:
        await agents.stop()
        stop_processes((fenliu, bare))
        if probe.exists():  # kept for a closer look: bench/results/latency-probe.txt
            from bench.common import RESULTS

            RESULTS.mkdir(exist_ok=True)
            shutil.copy(probe, RESULTS / "latency-probe.txt")
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nOpen-loop latency, ms from the scheduled send (max {max_rate:,.0f} requests/s closed-loop)")
    for row in rows:
        print(line(row))
        if "probe" in row:
            print(probe_line(row["probe"]))
    save("latency", rows, max_rate=max_rate, seconds=args.seconds)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--generate":
        raise SystemExit(generate_main(sys.argv[2:]))
    raise SystemExit(asyncio.run(main()))
