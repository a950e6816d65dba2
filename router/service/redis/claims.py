"""Shared capacity: agents' statuses, loads and the conversation→agent claims live in Redis and
change only in ``claim.lua`` and ``release.lua`` (called through the Dispatcher's claim hook),
both fenced by the shard lease.

Their entries in the claim log are also their announcements (every instance follows it beside
``control``): they carry the agent's new global load, so every instance's ``least_load`` and
availability count what the agent holds elsewhere (``shared_load``). Claims are synchronous
Redis calls from inside the (synchronous) Dispatcher: one Lua round trip per pick, which keeps a
single routing implementation instead of an async copy of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from router.core.config import Config
from router.core.models import AgentStatusEvent
from router.core.pipeline import InputError, Router

if TYPE_CHECKING:
    from router.service.redis.service import RedisService

SEQ_OFFSET = 1 << 62


def claim_seq(raw: bytes) -> int:
    """A claim's place in the global claim order: its claim log entry id (``ms-n``, stored as the
    agent's ``seq``) as one increasing integer; a plain integer is a sequence number of an older
    version, which sorts before every entry id."""
    ms, _, n = raw.partition(b"-")
    return (int(ms) << 20) + int(n) if n else int(ms)


class Claims:
    """Claims, releases and statuses in Redis, and the announcements of every instance's."""

    def __init__(self, service: RedisService) -> None:
        self.service = service
        self.link = service.link
        #: A claim or release was refused for a lease this instance no longer holds: the batch
        #: being routed must not commit.
        self.fenced = False
        self.control_last: bytes | str = "$"
        self.claims_last: bytes | str = "$"
        self.applied = b"0-0"

    def new_router(self, config: Config) -> Router:
        """A router whose dedupe happened at ingest and whose assignments claim in Redis."""
        s = self.service
        router = Router(config, reservations=True, clock=lambda: s.clock, dedupe=lambda shop, msg: False)
        router.dispatcher.claim_hook = self.claim
        router.dispatcher.release_hook = self.release
        return router

    async def open(self) -> None:
        """Follow the control and claim logs from their ends, starting from the statuses."""
        r, k = self.link.r, self.link.keys
        last_control, last_claim = await r.pipeline(transaction=False).xrevrange(k.control, count=1) \
            .xrevrange(k.claims, count=1).execute()
        self.control_last = last_control[0][0] if last_control else "0-0"
        self.claims_last = last_claim[0][0] if last_claim else "0-0"
        self.applied = last_claim[0][0] if last_claim else b"0-0"  # the statuses below include them
        await self.load_statuses()

    async def load_statuses(self) -> None:
        """Every instance starts from the shared agent statuses (an agent never seen is offline)."""
        s, k = self.service, self.link.keys
        pipe = self.link.r.pipeline(transaction=False)
        agents = sorted(s.config.agents)
        for aid in agents:
            pipe.hsetnx(k.agent(aid), "status", "offline")
        for aid in agents:
            pipe.hmget(k.agent(aid), "status", "assigned", "seq", "load")
        res = await pipe.execute()
        d = s.router.dispatcher
        d.advance(s.clock)
        for aid, (status, assigned, seq, load) in zip(agents, res[len(agents):], strict=True):
            d.set_status(aid, (status or b"offline").decode())
            st = d.agents[aid]
            st.assigned = int(assigned or 0)
            st.last_seq = claim_seq(seq or b"0") - SEQ_OFFSET
            d.set_shared_load(aid, int(load or 0) - st.load)
            d.refresh(aid)

    async def set_status(self, agent_id: str, status: str) -> None:
        k = self.link.keys
        pipe = self.link.r.pipeline(transaction=True)
        pipe.hset(k.agent(agent_id), "status", status)
        pipe.xadd(k.control, {"type": "status", "agent": agent_id, "status": status, "by": self.link.id},
                  maxlen=10000, approximate=True)
        await pipe.execute()

    # -- called synchronously by the Dispatcher ------------------------------------------------------

    def claim(self, agent_id: str, conversation_id: str) -> bool:
        s, k = self.service, self.link.keys
        n = k.shard_of_conversation(conversation_id)
        token = s.leases.held.get(n)
        acfg = s.config.agents.get(agent_id)
        if token is None or acfg is None:
            return False
        self.link.rt["claim"].inc()
        got = self.link.claim(keys=[k.lease(n), k.agent(agent_id), k.owners(n), k.claims, k.held(agent_id)],
                              args=[token, agent_id, conversation_id, acfg.max_concurrent, self.link.id],
                              client=self.link.rs)
        if got == -2:
            self.fenced = True
        elif got == -1:
            self.link.log.warning("claim_conflict", agent_id=agent_id, conversation_id=conversation_id)
        return got == 1

    def release(self, agent_id: str, conversation_id: str, reason: str = "release") -> None:
        k = self.link.keys
        n = k.shard_of_conversation(conversation_id)
        token = self.service.leases.held.get(n)
        if token is None:
            self.fenced = True
            return
        self.link.rt["release"].inc()
        got = self.link.release(keys=[k.lease(n), k.agent(agent_id), k.owners(n), k.claims, k.held(agent_id)],
                                args=[token, agent_id, conversation_id, self.link.id, reason], client=self.link.rs)
        if got == -2:
            self.fenced = True

    # -- following every instance's announcements -----------------------------------------------------

    async def follow(self) -> None:
        """Read ``control`` and the claim log; the router loop applies what they say."""
        s, k = self.service, self.link.keys
        while not s.stopping:
            try:
                self.link.rt["control"].inc()
                res = await self.link.r.xread({k.control: self.control_last, k.claims: self.claims_last},
                                              count=500, block=1000)
                for key, entries in res or ():
                    if key.decode() == k.claims:
                        self.claims_last = entries[-1][0]
                        s.engine.put(("control", entries, entries[-1][0]))
                    else:
                        self.control_last = entries[-1][0]
                        s.engine.put(("control", entries, None))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.link.log.warning("control_read_failed", error=str(exc))
                await asyncio.sleep(0.5)

    async def apply(self, eid: bytes, fields: dict[bytes, bytes]) -> None:
        """One entry of ``control`` or of the claim log (``op``: a claim or release announces the
        agent's shared counters; ``claimed``/``freed`` on ``control`` are the same from an older
        version)."""
        s = self.service
        push = s.desk.push
        kind = fields.get(b"type")
        agent = fields.get(b"agent", b"").decode()
        if agent not in s.router.dispatcher.agents:
            return
        op = fields.get(b"op")
        if op == b"claim":
            self._sync_shared_load(agent, fields.get(b"load"))
            if b"assigned" in fields:
                self._sync_counters(agent, int(fields[b"assigned"]), claim_seq(eid))
        elif op == b"release":
            self._sync_shared_load(agent, fields.get(b"load"))
            push(s.router.dispatcher.refresh(agent))
        elif kind == b"status":
            s.clock = max(time.time(), s.clock)
            with contextlib.suppress(InputError):
                push(await s.router.handle_event(AgentStatusEvent(agent, fields[b"status"].decode())))  # type: ignore[arg-type]
        elif kind == b"freed":
            self._sync_shared_load(agent, fields.get(b"load"))
            push(s.router.dispatcher.refresh(agent))
        elif kind == b"claimed":
            self._sync_shared_load(agent, fields.get(b"load"))
            self._sync_counters(agent, int(fields[b"assigned"]), int(fields[b"seq"]))
        elif kind == b"connected" and fields.get(b"by", b"").decode() != self.link.id:
            session = s.desk.sessions.get(agent)
            if session is not None and hasattr(session, "close"):
                self.link.log.info("agent_connected_elsewhere", agent_id=agent)
                asyncio.get_running_loop().create_task(session.close(4000, b"replaced by a new connection"))

    def _sync_shared_load(self, agent_id: str, load: bytes | None) -> None:
        """An announced load of the agent across all instances: what this router does not hold of
        it is held elsewhere, which ``least_load`` and availability add to the local load. The
        difference is exact once this instance has read the announcements of its own claims and
        releases; in between (a few milliseconds) it may be off by those, and a negative
        difference counts as 0. (No ``load``: an announcement from an older version.)"""
        d = self.service.router.dispatcher
        st = d.agents.get(agent_id)
        if load is None or st is None:
            return
        self.service.desk.push(d.set_shared_load(agent_id, int(load) - st.load))

    def _sync_counters(self, agent_id: str, assigned: int, seq: int) -> None:
        """Adopt the shared counters the strategies' keys read, so round robin and weighted shares
        hold across instances. ``last_seq`` becomes the global claim sequence offset below zero:
        an assignment made here and not yet announced (a positive local sequence) still sorts as
        the most recent."""
        d = self.service.router.dispatcher
        st = d.agents.get(agent_id)
        if st is None:
            return
        st.assigned = assigned
        st.last_seq = seq - SEQ_OFFSET
        self.service.desk.push(d.refresh(agent_id))
