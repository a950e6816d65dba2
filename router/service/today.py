"""Today's figures for the workbench and the supervisors' dashboard (``GET /v1/today``,
``GET /v1/dashboard`` and the supervisors' feed).

They are :mod:`router.storage.figures`'s — the same fold ``fenliu stats`` runs over the store — kept up
to date from the journal rows the service commits (:meth:`Today.feed`, on the event loop, a few
dict updates per row), and read back once at start through the records interface
(:meth:`Today.load`, :meth:`router.storage.records.Records.figure_rows`: the SQLite file's
:func:`~router.storage.figures.read_rows`, as ``stats`` reads it, or PostgreSQL's every-instance rows),
so they survive restarts and equal ``fenliu stats --from <today>`` at any moment. An earlier design polled the store every two seconds from a
worker thread; that thread's Python work contended for the GIL with the event loop and cost
ingest about a fifth of its throughput (docs/service.md, "Benchmark").

The day is ``defaults.timezone``'s; at midnight the board starts again from nothing (a period is
read on its own, as ``stats`` reads one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog

from router.storage.figures import Ledger, Row, Stats

if TYPE_CHECKING:
    from router.service.service import Service

log = structlog.get_logger("fenliu.today")


def legacy(row: Row) -> dict[str, Any]:
    """The short names the workbench's status bar and the dashboard read, from a :class:`Row`."""
    return {"messages": row.messages, "conversations": row.sessions, "replies": row.replies,
            "answered": row.responses, "in_time": row.reply_3min_hits,
            "missed": row.reply_3min_eligible - row.reply_3min_hits, "pending": row.pending,
            "reply_rate": row.reply_3min_rate, "avg_response_s": row.human_response_s_avg,
            "first_response_s": row.first_response_s_avg, "ratings": row.ratings, "rating_avg": row.rating_avg,
            "satisfaction_rate": row.satisfaction_rate, "transfers": row.transfers}


class Today:
    """The day's figures, in ``defaults.timezone``."""

    def __init__(self, service: Service, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.clock = clock
        self.day = ""
        self.day_start = 0.0
        self.day_end = 0.0
        self.seq = 0
        self.outbox_id = 0
        self.ledger: Ledger | None = None
        self._backlog: list[tuple[list[tuple], dict[int, int]]] | None = []
        self._loaded = asyncio.Event()

    def _roll(self, ts: float) -> None:
        """Start the day that holds ``ts``: yesterday's figures and open sessions are dropped."""
        tz = ZoneInfo(self.service.config.main.defaults.timezone)
        local = datetime.fromtimestamp(ts, tz).date()
        self.day = local.isoformat()
        self.day_start = datetime(local.year, local.month, local.day, tzinfo=tz).timestamp()
        nxt = local + timedelta(days=1)
        self.day_end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp()
        self.ledger = Ledger(self.service.config, self.day_start, self.day_end)

    def now(self) -> float:
        """The service's clock rule: never behind the last row folded."""
        now = self.clock()
        if self.ledger is not None:
            now = max(now, self.ledger.last_clock)
        return now

    # -- live: the rows the service committed -----------------------------------------------------

    def feed(self, rows: list[tuple], ids: dict[int, int]) -> None:
        """Fold one committed batch (``ids``: the outbox ids of its reply rows by index). While
        :meth:`load` reads the store, batches wait and are folded after it, without the rows the
        read already saw."""
        if self._backlog is not None:
            self._backlog.append((rows, ids))
            return
        self._apply(rows, ids)

    def _apply(self, rows: list[tuple], ids: dict[int, int], seq_after: int = 0, outbox_after: int = 0) -> None:
        picked = []
        for index, row in enumerate(rows):
            kind = row[0]
            if kind == "reply":
                rid = ids.get(index)
                if rid is not None and rid <= outbox_after:
                    continue
                ts = row[6]
            elif kind in ("message", "event", "tick"):
                if row[1] <= seq_after:
                    continue
                ts = row[2]
            else:
                continue
            if ts >= self.day_end:
                if picked:
                    self.ledger.apply(picked)  # type: ignore[union-attr]
                    picked = []
                self._roll(ts)
            picked.append(row)
        if picked and self.ledger is not None:
            self.ledger.apply(picked)

    # -- at start: what the store holds for today --------------------------------------------------

    async def load(self) -> None:
        """Read today's rows from the records store (once), then fold the batches committed
        meanwhile that the read did not see."""
        try:
            await self._read_store(self.clock())
        except Exception as exc:  # noqa: BLE001 - the figures then start from now; routing goes on
            log.warning("today_load_failed", error=str(exc))
            self._roll(self.clock())
            self.seq = self.outbox_id = 0
        finally:
            backlog, self._backlog = self._backlog or [], None
            for rows, ids in backlog:
                self._apply(rows, ids, self.seq, self.outbox_id)
            self._loaded.set()

    async def ready(self) -> None:
        """Wait until :meth:`load` has read the store (at once after that)."""
        await self._loaded.wait()

    async def _read_store(self, now: float) -> None:
        """Through the records interface: the SQLite file (read in a worker thread), or, with
        PostgreSQL records, nothing of this instance's file — every instance's rows of the last
        day come through ``feed`` from the records' first follow, which this waits for."""
        self._roll(now)
        rows, self.seq, self.outbox_id = await self.service.records.figure_rows(self.day_start, self.day_end)
        self.ledger.apply(rows)  # type: ignore[union-attr]
        log.info("today_loaded", day=self.day, rows=len(rows))

    # -- reading -----------------------------------------------------------------------------------

    def stats(self, shops: set[str] | None = None, agent_id: str | None = None) -> tuple[Stats, float]:
        """The day's :class:`~router.storage.figures.Stats` at the service's clock, and that clock."""
        now = self.now()
        if self.ledger is None or (now >= self.day_end and self._backlog is None):
            self._roll(now)
        assert self.ledger is not None
        return self.ledger.stats(min(now, self.day_end), shops=shops, agent=agent_id), now

    def figures(self, shops: set[str] | None = None, agent_id: str | None = None) -> dict[str, Any]:
        """Totals for ``shops`` (all when ``None``), or what is charged to one agent; for a team,
        with hourly series and per agent; ``stats`` holds every figure."""
        stats, now = self.stats(shops, agent_id)
        out: dict[str, Any] = {"day": self.day, "updated": now, **legacy(stats.total),
                               "reply_window_s": self.service.config.main.defaults.reply_within_s, "stats": stats}
        if agent_id is None:
            assert self.ledger is not None
            out["hours"] = self.ledger.hourly(min(now, self.day_end), shops)
            out["agents"] = {r.key: legacy(r) for r in stats.by_agent}
        return out
