"""Where everything lives in Redis: one place that names every key (docs/deploy.md lists them)."""

from __future__ import annotations

import zlib
from pathlib import Path

GROUP = "routers"
LUA = Path(__file__).with_name("lua")


def shard_of(shop_id: str, shards: int) -> int:
    """Stable across processes and Python versions (``hash()`` is salted per process), so every
    instance sends one shop, hence one conversation, to the same stream."""
    return zlib.crc32(shop_id.encode()) % shards


class Keys:
    def __init__(self, prefix: str, shards: int) -> None:
        self.p = prefix
        self.shards = shards

    def shard(self, shop_id: str) -> int:
        return shard_of(shop_id, self.shards)

    def shard_of_conversation(self, conversation_id: str) -> int:
        return shard_of(conversation_id.partition(":")[0], self.shards)

    def stream(self, n: int) -> str:
        return f"{self.p}:in:{n}"

    def backlog(self, n: int) -> str:
        return f"{self.p}:backlog:{n}"

    def lease(self, n: int) -> str:
        return f"{self.p}:lease:{n}"

    def epoch(self, n: int) -> str:
        """How many times shard ``n`` was leased: the first part of each lease token."""
        return f"{self.p}:epoch:{n}"

    @property
    def ticks(self) -> str:
        """The committed timer decisions, which the records copy to PostgreSQL."""
        return f"{self.p}:ticks"

    def convs(self, n: int) -> str:
        return f"{self.p}:convs:{n}"

    def owners(self, n: int) -> str:
        return f"{self.p}:owners:{n}"

    def agent(self, agent_id: str) -> str:
        return f"{self.p}:agent:{agent_id}"

    def last(self, n: int) -> str:
        return f"{self.p}:last:{n}"

    def held(self, agent_id: str) -> str:
        return f"{self.p}:held:{agent_id}"

    def to(self, agent_id: str) -> str:
        return f"{self.p}:to:{agent_id}"

    def conn(self, agent_id: str) -> str:
        return f"{self.p}:conn:{agent_id}"

    def replies(self, instance: str) -> str:
        return f"{self.p}:replies:{instance}"

    def dedupe(self, shop_id: str) -> str:
        return f"{self.p}:dedupe:{shop_id}"

    def seen(self, shop_id: str, msg_id: str) -> str:
        """Where an older version remembered one message id (read at ingest until they expire)."""
        return f"{self.p}:seen:{shop_id}:{msg_id}"

    @property
    def claims(self) -> str:
        return f"{self.p}:claims"

    @property
    def decisions(self) -> str:
        return f"{self.p}:decisions"

    @property
    def control(self) -> str:
        return f"{self.p}:control"

    @property
    def instances(self) -> str:
        return f"{self.p}:instances"

    @property
    def token_key(self) -> str:
        return f"{self.p}:token_key"


def lua(name: str) -> str:
    return (LUA / f"{name}.lua").read_text(encoding="utf-8")
