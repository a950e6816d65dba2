"""Agents' presence when several instances share a Redis: an agent may connect to any instance.

Frames for an agent go to its stream ``to:{agent}`` (in the routing instance's commit), read by
whichever instance holds its WebSocket (:meth:`SharedPresence.relay`); streams, unlike pub/sub,
keep what was sent while that instance restarts. Its status is shared, and it goes offline only
when no instance has held its connection for the reconnect grace.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import msgspec
from redis.exceptions import RedisError

from router.core.models import Conversation, WsAssigned
from router.service.redis.lease import LEASE_MS

if TYPE_CHECKING:
    from router.service.redis.service import RedisService

_conversation = msgspec.json.Decoder(Conversation)


class SharedPresence:
    """The :class:`router.service.sessions.Presence` of an instance among several."""

    def __init__(self, service: RedisService) -> None:
        self.service = service
        self.link = service.link
        self.log = service.link.log
        #: The last entry of each connected agent's stream already relayed.
        self._frame_last: dict[str, bytes | str] = {}
        self._reply_last: bytes | str = "0-0"

    async def attaching(self, agent_id: str) -> None:
        last = await self.link.r.xrevrange(self.link.keys.to(agent_id), count=1)
        self._frame_last[agent_id] = last[0][0] if last else "0-0"

    async def attached(self, agent_id: str) -> None:
        k, link = self.link.keys, self.link
        pipe = link.r.pipeline(transaction=False)
        pipe.set(k.conn(agent_id), link.id, px=3 * LEASE_MS)
        pipe.xadd(k.control, {"type": "connected", "agent": agent_id, "by": link.id}, maxlen=10000, approximate=True)
        pipe.hget(k.agent(agent_id), "status")
        status = (await pipe.execute())[2]
        if status in (None, b"offline"):
            await self.service.claims.set_status(agent_id, "online")

    def detached(self, agent_id: str) -> None:
        self._frame_last.pop(agent_id, None)

    def grace_over(self, agent_id: str) -> None:
        asyncio.get_running_loop().create_task(self._offline_unless_elsewhere(agent_id))

    async def _offline_unless_elsewhere(self, agent_id: str) -> None:
        with contextlib.suppress(RedisError):
            holder = await self.link.r.get(self.link.keys.conn(agent_id))
            if holder is None or holder.decode() == self.link.id:
                self.log.info("agent_grace_over", agent_id=agent_id)
                await self.service.claims.set_status(agent_id, "offline")

    async def hello(self, agent_id: str) -> tuple[str, list[WsAssigned]]:
        """The agent's status and every conversation it holds, whichever instance routes them."""
        s, r, k = self.service, self.link.r, self.link.keys
        status = await r.hget(k.agent(agent_id), "status")
        cids = sorted(c.decode() for c in await r.smembers(k.held(agent_id)))
        pipe = r.pipeline(transaction=False)
        for cid in cids:
            pipe.hget(k.convs(k.shard_of_conversation(cid)), cid)
        snaps = []
        for cid, raw in zip(cids, await pipe.execute(), strict=True):
            if raw is None:
                continue
            conv = _conversation.decode(raw)
            history = (await s.pg.records.conversation(cid, conv.opened_at))[0] if s.pg is not None else []
            snaps.append(WsAssigned(cid, conv.shop_id, conv.buyer_id, conv.state, conv.skill, conv.priority,
                                    "message", conv.reserved_until, history=history))
        return (status or b"offline").decode(), snaps

    async def relay(self) -> None:
        """Deliver frames from the agents' streams to the WebSockets held here, and requests'
        verdicts to their waiting callers."""
        s, link = self.service, self.link
        k = link.keys
        mine = k.replies(link.id)
        sessions = s.desk.sessions
        while not s.stopping:
            streams: dict[str, bytes | str] = {mine: self._reply_last}
            for aid in list(sessions):
                if aid in self._frame_last:
                    streams[k.to(aid)] = self._frame_last[aid]
            try:
                link.rt["frames"].inc()
                res = await link.r.xread(streams, count=500, block=100)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.log.warning("frames_read_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            for key, entries in res or ():
                key = key.decode()
                if key == mine:
                    self._reply_last = entries[-1][0]
                    for _, fields in entries:
                        s.intake.verdict(msgspec.json.decode(fields[b"d"]))
                    continue
                aid = key.rsplit(":", 1)[1]
                if aid not in self._frame_last:
                    continue
                self._frame_last[aid] = entries[-1][0]
                relay = getattr(sessions.get(aid), "deliver_encoded", None)
                if relay is not None:
                    for _, fields in entries:
                        for frame in fields[b"d"].split(b"\n"):
                            relay(frame)
