"""Timer decisions (ticks) from the fenced Redis commit to PostgreSQL's history, each once.

A tick is explained by no input, so its row cannot be written before the commit the way a
message's is: a commit that is then fenced would leave a decision that never happened. Instead
``commit.lua`` adds the batch's ticks to the ``ticks`` stream atomically with the rest of the
batch, and every instance runs a :class:`TickCopier` in one consumer group. An entry is
acknowledged and deleted only after its row is written; a copier that dies in between leaves it
pending, and another instance claims it after :data:`IDLE_MS` and writes it again, which
replaces the same row (keyed by the stream entry). Nothing committed is lost, nothing doubled.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import redis.asyncio as aredis
import structlog
from redis.exceptions import ResponseError

from router.core.models import Decision
from router.storage.pg.records import PgRecords

log = structlog.get_logger("fenliu.pg")

#: The consumer group that copies the ``ticks`` stream.
GROUP = "records"
#: How long an entry stays with a copier that read it and never acknowledged it (it died)
#: before another copier takes it.
IDLE_MS = 5000
#: How often a copier looks when no commit of its instance nudged it.
POLL_S = 0.5
#: Entries read at a time.
COUNT = 500


class Tick(msgspec.Struct):
    """One commit's ticks, as the commit writes them."""

    ds: list[Decision]
    clock: float


_encode = msgspec.json.Encoder().encode
_tick = msgspec.json.Decoder(Tick)


def entry(decisions: list[Decision], clock: float) -> bytes:
    """The stream entry of a commit's ticks."""
    return _encode(Tick(decisions, clock))


class TickCopier:
    """One instance's member of the copying group."""

    def __init__(self, r: aredis.Redis, key: str, name: str, records: PgRecords) -> None:
        self.r = r
        self.key = key
        self.name = name
        self.records = records
        self._nudged = asyncio.Event()

    async def start(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: another instance made it first
            await self.r.xgroup_create(self.key, GROUP, id="0", mkstream=True)

    def nudge(self) -> None:
        """This instance committed ticks: copy them now rather than at the next poll."""
        self._nudged.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await self._nudged.wait()
            self._nudged.clear()
            try:
                await self.copy()
            except Exception as exc:  # noqa: BLE001 - Redis or PostgreSQL away: the entries wait, retry
                log.warning("ticks_copy_failed", error=str(exc))
                await asyncio.sleep(1.0)

    async def copy(self) -> int:
        """Copy new entries and those a dead copier left; returns how many were written."""
        got = await self.r.xreadgroup(GROUP, self.name, {self.key: ">"}, count=COUNT)
        entries = [e for _, es in got for e in es]
        _, stale, *_ = await self.r.xautoclaim(self.key, GROUP, self.name, IDLE_MS, "0-0", count=COUNT)
        entries += [e for e in stale if e[1]]  # (id, None): deleted after it was read
        if not entries:
            return 0
        rows = []
        for eid, fields in entries:
            tick = _tick.decode(fields[b"d"])
            rows.append(("tick", f"t:{eid.decode()}", tick.clock, None, None, None, None, tick.ds, 0))
        await self.records.write_history(rows)
        ids = [eid for eid, _ in entries]
        await self.r.pipeline(transaction=False).xack(self.key, GROUP, *ids).xdel(self.key, *ids).execute()
        return len(rows)
