"""Three ``fenliu serve`` instances over one Redis take signed traffic spread across all of
them while WebSocket agents (connected to all of them) accept and close what they get; one
instance is SIGKILLed mid-run. Every acknowledged message is decided exactly once, the claim log
shows no agent over its cap and no conversation with two agents, and the survivors drain it all."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from collections import Counter

import aiohttp
import pytest

from router.storage.redis.keys import shard_of
from tests.redis.support import (
    PASSWORD,
    Instances,
    check_claim_log,
    claim_log,
    decisions,
    owners,
    shops_per_shard,
    wait_for,
    write_config,
)
from tests.router.serve_support import SECRET_A, Client, message

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]

SHARDS = 6
AGENTS = [f"x{i}" for i in range(6)]
CAP = 3


class WsAgent:
    """Connects to one instance (the next live one after a failure), accepts and closes every
    conversation it is given, including those it holds when it (re)connects."""

    def __init__(self, aid: str, urls: list[str], first: int, dead: set[int], http: aiohttp.ClientSession) -> None:
        self.aid = aid
        self.urls = urls
        self.node = first
        self.dead = dead
        self.http = http
        self.closed: Counter[str] = Counter()
        self.connections = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.node in self.dead:
                self.node = (self.node + 1) % len(self.urls)
                continue
            url = self.urls[self.node]
            try:
                token = await Client(url, self.http).login(f"ops:{self.aid}", PASSWORD)
                async with self.http.ws_connect(f"{url.replace('http', 'ws')}/v1/agents/ws", headers={"Authorization": f"Bearer {token}"}) as ws:
                    self.connections += 1
                    await self._serve(ws, stop)
            except (TimeoutError, aiohttp.ClientError, AssertionError, OSError):
                await asyncio.sleep(0.2)
                self.node = (self.node + 1) % len(self.urls)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                msg = await ws.receive(timeout=0.5)
            except TimeoutError:
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise aiohttp.ClientError(f"socket ended: {msg.type}")
            frame = json.loads(msg.data)
            todo = []
            if frame["type"] == "hello":
                todo = [c["conversation_id"] for c in frame.get("conversations", [])]
            elif frame["type"] == "assigned":
                todo = [frame["conversation_id"]]
            for cid in todo:
                await ws.send_json({"type": "accept", "conversation_id": cid})
                await ws.send_json({"type": "close", "conversation_id": cid})
                self.closed[cid] += 1


async def test_sigkill_one_of_three_loses_nothing_and_assigns_nothing_twice(tmp_path, shared_redis):  # noqa: F811
    r, prefix = shared_redis
    shops = shops_per_shard(SHARDS)
    cfg = write_config(tmp_path, prefix, shops={s: "FENLIU_TEST_SECRET_A" for s in shops},
                       agents=[{"id": a, "shops": ["*"], "cap": CAP} for a in AGENTS], shards=SHARDS)
    nodes = Instances(cfg, tmp_path, 3, AGENTS)
    dead: set[int] = set()
    acked: list[str] = []
    sent: list[str] = []
    rng = random.Random(8)
    try:
        await nodes.healthy()
        await wait_for(lambda: None not in owners(r, prefix, SHARDS).values()
                       and len(set(owners(r, prefix, SHARDS).values())) == 3, 20, "three instances to own shards")
        before_kill = owners(r, prefix, SHARDS)
        victim_id = before_kill[0]
        victim_shops = {s for s in shops if before_kill[shard_of(s, SHARDS)] == victim_id}
        async with aiohttp.ClientSession() as http:
            clients = [Client(u, http) for u in nodes.urls]
            stop_agents = asyncio.Event()
            agents = [WsAgent(a, nodes.urls, i % 3, dead, http) for i, a in enumerate(AGENTS)]
            agent_tasks = [asyncio.create_task(a.run(stop_agents)) for a in agents]
            await wait_for(lambda: all(a.connections for a in agents), 20, "agents to connect")
            stop = asyncio.Event()

            async def producer(w: int) -> None:
                i = 0
                while not stop.is_set():
                    node = (w + i) % 3
                    i += 1
                    if node in dead:
                        continue
                    shop = shops[rng.randrange(SHARDS)]
                    batch = [message(f"w{w}-{i}-{k}", f"b-{rng.randrange(12)}", shop) for k in range(3)]
                    sent.extend(m["msg_id"] for m in batch)
                    try:
                        status, body = await clients[node].post_messages(shop, batch, secret=SECRET_A)
                    except (TimeoutError, aiohttp.ClientError):
                        continue
                    assert status in (202, 503), body
                    if status == 202:
                        acked.extend(m["msg_id"] for m in batch)
                    await asyncio.sleep(0.01)

            workers = [asyncio.create_task(producer(w)) for w in range(4)]
            await wait_for(lambda: len(acked) >= 300, 30, "300 acknowledged messages")
            victim = next(i for i in range(3) if nodes.procs[i].pid and _instance_pid(victim_id) == nodes.procs[i].pid)
            os.kill(nodes.procs[victim].pid, signal.SIGKILL)
            dead.add(victim)
            nodes.procs[victim].wait(timeout=10)
            killed_at = len(acked)
            await wait_for(lambda: len(acked) >= killed_at + 300, 30, "300 more acknowledged messages after the kill")
            stop.set()
            await asyncio.gather(*workers)

            def drained() -> bool:
                return all(r.hlen(f"{prefix}:convs:{n}") == 0 for n in range(SHARDS)) and \
                    len({d["d"]["msg_id"] for d in decisions(r, prefix) if d["d"]["msg_id"]}) >= len(set(acked))

            try:
                await wait_for(drained, 45, "every message decided and every conversation closed", interval=0.3)
            except AssertionError as exc:
                seen = {a.aid: (a.connections, sum(a.closed.values()), a.node) for a in agents}
                raise AssertionError(f"{exc}: {_state(r, prefix, acked)}; agents {seen}") from None
            stop_agents.set()
            await asyncio.gather(*agent_tasks)

        decided = decisions(r, prefix)
        per_msg = Counter(d["d"]["msg_id"] for d in decided if d["d"]["msg_id"])
        assert all(per_msg[m] == 1 for m in acked), [m for m in acked if per_msg[m] != 1][:10]
        assert set(per_msg) <= set(sent) and max(per_msg.values()) == 1
        log = claim_log(r, prefix)
        final = check_claim_log(log, {a: CAP for a in AGENTS})
        assert set(final.values()) == {0}
        assert all(r.hlen(f"{prefix}:owners:{n}") == 0 for n in range(SHARDS))
        routers = Counter(d["by"] for d in decided)
        assert victim_id in routers and len(routers) == 3, routers
        survivors_after = {d["by"] for d in decided[-50:]}
        assert victim_id not in survivors_after
        assert any(e.get("reason") == "release" for e in log)
        taken_over = [d for d in decided if d["d"]["shop_id"] in victim_shops and d["by"] != victim_id]
        assert taken_over, "the survivors routed the dead instance's shops"
        assert any(d["d"]["cause"] == "queue_drain" and d["by"] != victim_id for d in decided), "queues drained"
    finally:
        nodes.stop()


def _state(r, prefix: str, acked: list[str]) -> str:
    """What is left, for a failure message."""
    states = Counter(json.loads(v)["state"] for n in range(SHARDS) for v in r.hvals(f"{prefix}:convs:{n}"))
    decided = {d["d"]["msg_id"] for d in decisions(r, prefix)}
    pending = {n: r.xpending(f"{prefix}:in:{n}", "routers")["pending"] for n in range(SHARDS)}
    ops = Counter((e["op"], e.get("reason", "")) for e in claim_log(r, prefix))
    return (f"claim log {dict(ops)}, open conversations by state {dict(states)}, undecided acknowledged messages "
            f"{len(set(acked) - decided)}, pending entries {pending}, leases {owners(r, prefix, SHARDS)}")


def _instance_pid(instance_id: str | None) -> int:
    """Instance ids are ``host-pid-random``."""
    assert instance_id is not None
    return int(instance_id.rsplit("-", 2)[1])
