"""Taking shards over, and dropping them: a new owner rebuilds a shard's conversations from the
mirror and routes the entries the old owner left pending (``XAUTOCLAIM``). Any Redis error while
routing drops the local state and rebuilds it from Redis (crash-only: the same path as a takeover).
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING

import msgspec
from redis.exceptions import RedisError

from router.core.models import Conversation, Message, WsHistoryItem
from router.service.redis.commit import Lost
from router.service.redis.lease import LEASE_MS
from router.service.sessions import HISTORY
from router.storage.redis.keys import GROUP

if TYPE_CHECKING:
    from router.service.redis.service import RedisService

_message = msgspec.json.Decoder(Message)
_messages = msgspec.json.Decoder(list[Message])
_conversation = msgspec.json.Decoder(Conversation)
_history_item = msgspec.json.Decoder(WsHistoryItem)


class Takeover:
    """Adopting a shard, routing what its old owner left, and dropping every shard."""

    def __init__(self, service: RedisService) -> None:
        self.service = service
        self.link = service.link

    async def reset(self, reason: str, keep: tuple[int, ...] = ()) -> None:
        """Drop every shard and all local routing state; leases are given back so the shards are
        adopted again (by us or another instance) from what Redis holds. Shards in ``keep``
        (a rebalance, between two committed batches) keep their lease and are adopted again."""
        s = self.service
        leases = s.leases
        (self.link.log.info if keep else self.link.log.error)("shards_dropped", reason=reason,
                                                              shards=sorted(leases.held), kept=list(keep))
        held, leases.held = dict(leases.held), {}
        leases.readable.clear()
        s.engine.batch = None
        s.claims.fenced = False
        await leases.give_back({n: t for n, t in held.items() if n not in keep})
        s.router = s.claims.new_router(s.config)
        s.engine.commits.mirrored.clear()
        s.memory.clear()
        with contextlib.suppress(RedisError, OSError):
            await s.claims.load_statuses()
        for n in keep:
            leases.held[n] = held[n]
            s.engine.put(("adopt", n, held[n]))

    async def adopt(self, n: int, token: str) -> None:
        """Rebuild the shard's conversations from the mirror, give back claims no committed state
        explains (made by an owner that died before its commit) and claim again for a mirrored
        agent whose release was not committed (or queue the conversation if that agent is now
        full), then route the entries the old owner left pending, oldest first, and drain."""
        s, link = self.service, self.link
        if s.leases.held.get(n) != token or n in s.leases.readable:
            return
        k = link.keys
        stream = k.stream(n)
        pending: list = []
        start: bytes | str = "0-0"
        while True:
            res = await link.r.xautoclaim(stream, GROUP, link.id, 0, start, count=1000)
            start = res[0]
            pending.extend(res[1])
            if start in (b"0-0", "0-0"):
                break
        convs, owners, lasts = await link.r.pipeline(transaction=False).hgetall(k.convs(n)).hgetall(k.owners(n)) \
            .hgetall(k.last(n)).execute()
        mirror = {cid.decode(): _conversation.decode(raw) for cid, raw in convs.items()}
        loaded = await self._load_histories(mirror, pending)
        d = s.router.dispatcher
        s.clock = max(time.time(), s.clock)
        d.advance(s.clock)
        for cid_b, last_b in lasts.items():
            agent, _, ts = last_b.decode().partition(" ")
            d.last_agent.setdefault(cid_b.decode(), (agent, float(ts)))
        orphans = 0
        for cid_b, agent_b in owners.items():
            cid, agent = cid_b.decode(), agent_b.decode()
            conv = mirror.get(cid)
            if conv is None or conv.agent_id != agent or conv.state not in ("assigned", "reserved"):
                s.claims.release(agent, cid, "orphan")
                orphans += 1
        held = {c.decode(): a.decode() for c, a in owners.items()}
        for conv in sorted(mirror.values(), key=lambda c: c.seq):
            if conv.state in ("assigned", "reserved") and held.get(conv.id) != conv.agent_id \
                    and not s.claims.claim(conv.agent_id or "", conv.id):
                conv.state = "queued"
                conv.agent_id = None
                conv.queued_at = conv.queued_at or s.clock
                conv.version += 1
            elif conv.state == "bot":
                conv.agent_id = None
            st = d.agents.get(conv.agent_id or "")
            if st is not None and conv.state in ("assigned", "reserved") and held.get(conv.id) == conv.agent_id:
                # a claim counted so far in the load the agent carries elsewhere becomes ours
                # (d.adopt re-keys the agent)
                st.shared_load = max(0, st.shared_load - 1)
            d.adopt(conv)
            s.engine.commits.mirrored[conv.id] = conv.version
            if conv.agent_id is not None:
                s.memory.owner[conv.id] = conv.agent_id
        for cid, items in loaded.items():
            s.memory.history[cid] = deque(items, maxlen=HISTORY)
        if s.claims.fenced:
            raise Lost("fenced while adopting")
        s.leases.readable.add(n)
        link.log.info("shard_adopted", shard=n, conversations=len(mirror), pending=len(pending), orphans=orphans)
        batch = s.engine.begin()
        for eid, fields in pending:
            await s.engine.route_entry(n, eid, fields, batch)
        for aid in sorted(d.agents):
            s.desk.push(d.refresh(aid))
        await s.engine.commit(batch)

    async def _load_histories(self, mirror: dict[str, Conversation], pending: list) -> dict[str, list[WsHistoryItem]]:
        """The history of the shard's open conversations from the records store (PostgreSQL; the
        SQLite records are the old owner's own file), so ``assigned`` frames after a takeover carry
        it. The old owner's pending entries are left out: they are routed again here and added then."""
        pg = self.service.pg
        if pg is None or not mirror:
            return {}
        entries: list[str] = []
        replies: set[tuple[str, float]] = set()
        for _eid, fields in pending:
            kind = (fields or {}).get(b"k")
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                if kind in (b"M", b"m"):
                    msgs = _messages.decode(fields[b"b"]) if kind == b"M" else [_message.decode(fields[b"b"])]
                    entries.extend(f"m:{m.shop_id}:{m.msg_id}" for m in msgs)
                elif kind == b"r":
                    replies.add((fields[b"c"].decode(), _history_item.decode(fields[b"b"]).ts))
        return await pg.records.histories({cid: conv.opened_at for cid, conv in mirror.items()},
                                          skip_entries=entries, skip_replies=replies, limit=HISTORY)

    async def reclaim(self, count: int) -> None:
        """Entries of our shards left pending on another consumer (read by an owner that had just
        lost its lease) are routed here after a lease period of idleness."""
        s, link = self.service, self.link
        batch = s.engine.begin()
        for n in sorted(s.leases.readable):
            res = await link.r.xautoclaim(link.keys.stream(n), GROUP, link.id, LEASE_MS, "0-0", count=count)
            for eid, fields in res[1]:
                await s.engine.route_entry(n, eid, fields, batch)
        await s.engine.commit(batch)
