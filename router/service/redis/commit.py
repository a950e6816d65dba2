"""A batch commits atomically and fenced: ``commit.lua`` acknowledges the batch's stream entries,
writes the conversation mirror, the decisions and the agents' frames only if the caller still
holds every lease; otherwise nothing is written and the entries are redelivered to the new owner,
so each message is decided exactly once.

Its writes are grouped per key (one ``HSET`` per mirror hash, one ``XADD`` for the batch's
decisions and one per agent for its frames), and an HTTP batch is one stream entry, so the Redis
commands per message do not grow with what a batch holds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from router.core.logging import bind_message
from router.core.models import Decision
from router.storage.redis.keys import GROUP

if TYPE_CHECKING:
    from router.service.redis.service import RedisService

_encode = msgspec.json.Encoder().encode

AGENT_STREAM_MAX = 1000
DECISIONS_MAX = 200_000
REPLIES_TTL_MS = 60_000
#: The ticks stream's bound, far above what the copiers leave in it (they delete what they copied):
#: it only matters when PostgreSQL is away for a long time.
TICKS_MAX = 1_000_000


class Lost(Exception):
    """A shard lease was lost while routing: drop the local state."""


class Batch:
    """What one pass of the consumer writes in its commit."""

    __slots__ = ("acks", "backlog", "decisions", "frames", "results")

    def __init__(self) -> None:
        self.acks: dict[int, list[bytes]] = {}
        self.backlog: dict[int, int] = {}
        self.decisions: list[Decision] = []
        self.frames: list[tuple[str, bytes]] = []
        self.results: list[tuple[str, dict[str, Any]]] = []


class _KeyIndex:
    """The keys a commit names, each once, by their 1-based index (what ``commit.lua`` reads)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, name: str) -> int:
        i = self._index.get(name)
        if i is None:
            self.keys.append(name)
            i = self._index[name] = len(self.keys)
        return i


class Commits:
    """Writes batches; remembers the version of each conversation the mirror holds, so a commit
    writes only what changed."""

    def __init__(self, service: RedisService) -> None:
        self.service = service
        self.mirrored: dict[str, int] = {}

    async def write(self, batch: Batch) -> None:
        """Write the batch in one fenced Lua call; a lost lease drops the local state."""
        s = self.service
        link = s.link
        bind_message(None)
        if s.claims.fenced:
            raise Lost("a claim or release was fenced")
        if s.pg is not None:  # the records first: what Redis acknowledges is in PostgreSQL
            await s.pg.before_commit()
        k = link.keys
        ki = _KeyIndex()
        d = s.router.dispatcher
        sets: dict[int, list[str]] = {}
        written: dict[str, int] = {}
        for cid, conv in d.conversations.items():
            if self.mirrored.get(cid) != conv.version:
                sets.setdefault(ki(k.convs(k.shard(conv.shop_id))), []).extend((cid, _encode(conv).decode()))
                written[cid] = conv.version
        gone = [cid for cid in self.mirrored if cid not in d.conversations]
        dels: dict[int, list[str]] = {}
        for cid in gone:
            n = k.shard_of_conversation(cid)
            dels.setdefault(ki(k.convs(n)), []).append(cid)
            if (last := d.last_agent.get(cid)) is not None:
                sets.setdefault(ki(k.last(n)), []).extend((cid, f"{last[0]} {last[1]}"))
        adds = []
        if batch.decisions:
            adds.append([ki(k.decisions), DECISIONS_MAX,
                         _encode({"ds": batch.decisions, "by": link.id, "ts": time.time()}).decode(), 0])
        ticks = s.pg.ticks(batch.decisions) if s.pg is not None else None
        if ticks is not None:
            adds.append([ki(k.ticks), TICKS_MAX, ticks.decode(), 0])
        frames: dict[str, list[bytes]] = {}
        for agent, frame in batch.frames:
            frames.setdefault(agent, []).append(frame)
        for agent, group in frames.items():
            adds.append([ki(k.to(agent)), AGENT_STREAM_MAX, b"\n".join(group).decode(), 0])
        for inst, res in batch.results:
            adds.append([ki(k.replies(inst)), AGENT_STREAM_MAX, _encode(res).decode(), REPLIES_TTL_MS])
        acks = [[ki(k.stream(n)), GROUP, [e.decode() for e in ids]] for n, ids in batch.acks.items() if ids]
        backlog = [[ki(k.backlog(n)), count] for n, count in batch.backlog.items() if count]
        if not (sets or dels or adds or acks):
            return
        fence = [[ki(k.lease(n)), token] for n, token in sorted(s.leases.held.items())]
        payload = _encode({"fence": fence, "ack": acks, "backlog": backlog, "set": list(sets.items()),
                           "del": list(dels.items()), "add": adds})
        link.rt["commit"].inc()
        ok = await link.commit(keys=ki.keys, args=[payload])
        if not ok:
            raise Lost("commit fenced")
        if s.pg is not None:
            s.pg.after_commit(ticked=ticks is not None)
        self.mirrored.update(written)
        for cid in gone:
            self.mirrored.pop(cid, None)
