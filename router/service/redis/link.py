"""One instance's connection to the shared Redis: its name among the instances, the keys, the
clients (an asyncio one, and a blocking one for the claims the synchronous Dispatcher makes) and
the Lua scripts, with a count of round trips by purpose."""

from __future__ import annotations

import contextlib
import os
import secrets

import redis
import redis.asyncio as aredis
import structlog
from prometheus_client import CollectorRegistry, Counter

from router.core.config import Config
from router.storage.redis.keys import Keys, lua

log = structlog.get_logger("fenliu.redis")

OPS = ("ingest", "commit", "claim", "release", "read", "lease", "control", "frames", "request")


class Link:
    """What every Redis part of an instance talks through."""

    def __init__(self, config: Config) -> None:
        st = config.main.storage
        self.id = f"{os.uname().nodename}-{os.getpid()}-{secrets.token_hex(3)}"
        self.keys = Keys(st.redis_prefix, st.shards)
        self.r = aredis.Redis.from_url(st.redis_url, socket_connect_timeout=2, socket_timeout=5)
        self.rs = redis.Redis.from_url(st.redis_url, socket_connect_timeout=2, socket_timeout=5)
        self.ingest = self.r.register_script(lua("ingest"))
        self.commit = self.r.register_script(lua("commit"))
        self.renew = self.r.register_script(lua("renew"))
        self.lease = self.r.register_script(lua("lease"))
        self.unlease = self.r.register_script(lua("unlease"))
        self.claim = self.rs.register_script(lua("claim"))
        self.release = self.rs.register_script(lua("release"))
        self.log = log.bind(instance=self.id)
        self.rt: dict[str, Counter] = {}

    def count_on(self, registry: CollectorRegistry) -> None:
        """Count round trips in the service's metrics."""
        round_trips = Counter("fenliu_redis_round_trips", "Round trips to Redis, by purpose", ["op"], registry=registry)
        self.rt = {op: round_trips.labels(op) for op in OPS}

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.r.aclose()
        self.rs.close()
