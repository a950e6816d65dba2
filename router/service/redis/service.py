"""``fenliu serve`` over Redis: several instances, one routing implementation, no lost message,
no double assignment (docs/deploy.md has the long version).

The same wiring as one instance (:class:`router.service.service.Service`), with the Redis parts:

- ingest and requests go to the shard streams (:mod:`router.service.redis.intake`), stateless;
- each instance routes the shards it holds a lease on (:mod:`router.service.redis.lease`) from
  their streams (:mod:`router.service.redis.stream`), a batch committing atomically and fenced
  (:mod:`router.service.redis.commit`); a new owner takes a dead one's shards over from the mirror
  (:mod:`router.service.redis.takeover`);
- capacity is shared and guarded: claims, statuses and loads live in Redis
  (:mod:`router.service.redis.claims`);
- agents may connect anywhere: their frames travel through their streams
  (:mod:`router.service.redis.presence`);
- with ``storage.records = "postgres"`` the records every instance reads
  (:mod:`router.service.redis.pg`).
"""

from __future__ import annotations

from typing import Any

from router.core.config import Config
from router.core.models import Conversation
from router.service.buyers import BuyerRecords, SqliteBook
from router.service.redis.claims import Claims
from router.service.redis.intake import Refused, Requester, SharedIntake, Unavailable
from router.service.redis.lease import Leases
from router.service.redis.link import Link
from router.service.redis.pg import PgSide
from router.service.redis.presence import SharedPresence
from router.service.redis.stream import StreamLoop
from router.service.redis.view import SharedView
from router.service.service import Parts, Service
from router.service.sessions import Sessions

__all__ = ["Refused", "RedisService", "Requester", "Unavailable"]


def redis_parts(service: RedisService) -> Parts:
    engine = StreamLoop(service)
    book = service.pg if service.pg is not None else SqliteBook(service.store, notes=False)
    return Parts(service.claims.new_router(service.config), engine, SharedIntake(service),
                 Sessions(service, service.presence, outlet=engine), SharedView(service), BuyerRecords(book))


class RedisService(Service):
    """The service of one instance among several sharing a Redis: the same wiring, its own parts."""

    #: A note is checked against the claim in Redis, not against this instance's router, which
    #: may not route the conversation.
    checks_claims = True

    def __init__(self, config: Config, *, store_path: str | None = None, simulate: bool = False) -> None:
        # What the parts reach for, made before the wiring builds them (redis_parts).
        self.link = link = Link(config)
        self.id, self.keys, self.r, self.rs = link.id, link.keys, link.r, link.rs
        self.leases = Leases(self)
        self.claims = Claims(self)
        self.presence = SharedPresence(self)
        #: The PostgreSQL records store's side (``storage.records = "postgres"``), else ``None``.
        self.pg: PgSide | None = None
        st = config.main.storage
        if st.records == "postgres":
            from router.storage.pg import database_url
            from router.storage.pg.records import PgRecords

            self.pg = PgSide(self, PgRecords(database_url(st), instance=link.id, pool_size=st.postgres_pool))
        super().__init__(config, store_path=store_path, simulate=simulate, parts=redis_parts)
        link.count_on(self.metrics.registry)
        if self.pg is not None:
            self.records = self.pg.records
            self.pg.count_on(self.metrics.registry)
        if simulate:
            link.log.warning("simulate_unsupported", reason="simulated agents are in-process sessions; with the redis "
                             "backend their frames are not delivered")

    async def shared_agents(self, agent_ids: list[str]) -> dict[str, dict[str, Any]]:
        """For ``/v1/agents``: status, load, conversations and connection across all instances
        (the local router knows only the shards it routes)."""
        k = self.keys
        pipe = self.r.pipeline(transaction=False)
        for aid in agent_ids:
            pipe.hmget(k.agent(aid), "status", "load")
            pipe.smembers(k.held(aid))
            pipe.exists(k.conn(aid))
        res = await pipe.execute()
        out = {}
        for i, aid in enumerate(agent_ids):
            (status, load), held, conn = res[3 * i:3 * i + 3]
            out[aid] = {"status": (status or b"offline").decode(), "load": int(load or 0),
                        "conversations": sorted(c.decode() for c in held), "connected": bool(conn)}
        return out

    def shared_health(self) -> dict[str, Any]:
        """For ``/healthz``: which instance this is, which shards it routes now and the last claim
        log entry it has applied (so a caller can wait until a claim's announcement is in)."""
        return {"backend": "redis", "instance": self.id, "shards": sorted(self.leases.readable),
                "claims_applied": self.claims.applied.decode()}

    async def mirrored_conversations(self, cids: list[str]) -> dict[str, Conversation]:
        """Open conversations by id from their shards' mirrors in Redis, whichever instance routes them."""
        return await self.view.mirrored(cids)
