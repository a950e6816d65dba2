"""Shard leases: each instance holds leases on some shards (its fair share of the live instances)
and routes only those. A dead instance's leases expire; a live one renews its own every
:data:`RENEW_S` and takes free shards up to its share, or gives back what is over it."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from router.service.redis.service import RedisService

LEASE_MS = 2000
RENEW_S = 0.4
SETTLE_S = 1.0
REFRESH_S = 1.0


class Leases:
    """The shards this instance holds (``held``: shard → token) and routes (``readable``)."""

    def __init__(self, service: RedisService) -> None:
        self.service = service
        self.link = service.link
        self.held: dict[int, str] = {}
        self.readable: set[int] = set()
        self.rebalancing = False
        self._seq = 0
        self._missing_since: dict[str, float] = {}

    def epoch(self, n: int) -> int:
        """Shard ``n``'s epoch as this instance leased it (0 if not held): the history rows'
        fence in PostgreSQL."""
        token = self.held.get(n)
        return int(token.partition(":")[0]) if token else 0

    async def give_back(self, shards: dict[int, str]) -> None:
        """Release leases (an error leaves them to expire)."""
        with contextlib.suppress(RedisError, OSError):
            for n, token in shards.items():
                await self.link.unlease(keys=[self.link.keys.lease(n)], args=[token])

    async def leave(self) -> None:
        """Stopping: give back every lease, leave the live instances, drop the replies stream."""
        k = self.link.keys
        with contextlib.suppress(RedisError):
            for n, token in list(self.held.items()):
                await self.link.unlease(keys=[k.lease(n)], args=[token])
            await self.link.r.zrem(k.instances, self.link.id)
            await self.link.r.delete(k.replies(self.link.id))
        self.held.clear()

    async def run(self) -> None:
        s = self.service
        started = time.monotonic()
        last_refresh = time.monotonic()
        rounds = 0
        while not s.stopping:
            try:
                await self._round(settled=time.monotonic() - started >= SETTLE_S)
                rounds += 1
                if time.monotonic() - last_refresh >= REFRESH_S:
                    last_refresh = time.monotonic()
                    s.engine.put(("refresh", None))
                    if rounds % 5 == 0:
                        s.engine.put(("reclaim",))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.link.log.warning("lease_round_failed", error=str(exc))
            await asyncio.sleep(RENEW_S)

    async def _round(self, settled: bool) -> None:
        s, link = self.service, self.link
        k = link.keys
        now_ms = int(time.time() * 1000)
        pipe = link.r.pipeline(transaction=False)
        pipe.zadd(k.instances, {link.id: now_ms + LEASE_MS})
        pipe.zremrangebyscore(k.instances, 0, now_ms)
        pipe.zcard(k.instances)
        for aid in s.desk.sessions:
            pipe.set(k.conn(aid), link.id, px=3 * LEASE_MS)
        link.rt["lease"].inc()
        live = (await pipe.execute())[2]
        if self.held:
            held = sorted(self.held.items())
            link.rt["lease"].inc()
            res = await link.renew(keys=[k.lease(n) for n, _ in held], args=[LEASE_MS, *(t for _, t in held)])
            lost = [n for (n, _), ok in zip(held, res, strict=True) if not ok]
            if lost:
                s.engine.put(("lost", lost))
                return
        if not settled:
            return
        fair = math.ceil(k.shards / max(1, live))
        if len(self.held) > fair and not self.rebalancing:
            self.rebalancing = True
            s.engine.put(("rebalance", fair))
        if len(self.held) < fair:
            offset = int(link.id.encode().hex(), 16) % k.shards
            for i in range(k.shards):
                n = (offset + i) % k.shards
                if n in self.held:
                    continue
                self._seq += 1
                link.rt["lease"].inc()
                got = await link.lease(keys=[k.lease(n), k.epoch(n)], args=[f"{link.id}:{self._seq}", LEASE_MS])
                if got:
                    self.held[n] = token = got.decode()
                    s.engine.put(("adopt", n, token))
                    if len(self.held) >= fair:
                        break
        await self._sweep_offline()

    async def _sweep_offline(self) -> None:
        """Agents whose WebSocket instance died: offline once no instance has held their
        connection for the reconnect grace."""
        s, link = self.service, self.link
        agents = [aid for aid, st in s.router.dispatcher.agents.items() if st.status != "offline"]
        if not agents:
            return
        link.rt["lease"].inc()
        holders = await link.r.mget([link.keys.conn(a) for a in agents])
        now = time.time()
        grace = s.config.main.server.reconnect_grace_s
        for aid, holder in zip(agents, holders, strict=True):
            if holder is not None or aid in s.desk.sessions or aid in s.desk.grace:
                self._missing_since.pop(aid, None)
                continue
            since = self._missing_since.setdefault(aid, now)
            if now - since >= grace:
                self._missing_since.pop(aid, None)
                link.log.info("agent_connection_lost", agent_id=aid)
                await s.claims.set_status(aid, "offline")
