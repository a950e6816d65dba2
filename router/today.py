"""Today's figures for the workbench and the supervisors' dashboard (``GET /v1/today``).

They are kept up to date from the journal rows the service commits (:meth:`Today.feed`, on the
event loop, a few dict updates per message), and read back from the store once at start
(:meth:`Today.load`), so they survive restarts. An earlier design polled the store every two
seconds from a worker thread; that thread's Python work contended for the GIL with the event
loop and cost ingest about a fifth of its throughput (docs/service.md, "Benchmark").

A *wait* starts with a buyer message routed to a human (``assigned`` or ``queued``) while no
earlier one is unanswered, and ends with the next agent reply. Its response time is the reply's
time minus the start. The 3-minute reply rate counts each session's first wait (as ``fenliu
stats`` does) when it started inside ``defaults.reply_window``: answered within
``defaults.reply_within_s``, against those answered later, closed unanswered, or still unanswered
after it.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog

from router.store import read_only
from router.writer import CLOSE_EVENT

if TYPE_CHECKING:
    from router.service import Service

log = structlog.get_logger("fenliu.today")


@dataclass
class _Figures:
    messages: int = 0
    conversations: int = 0
    replies: int = 0
    answered: int = 0
    latency_sum: float = 0.0
    in_time: int = 0
    missed: int = 0

    def add(self, other: _Figures) -> None:
        for f in self.__dataclass_fields__:
            setattr(self, f, getattr(self, f) + getattr(other, f))

    def as_json(self, pending: int = 0) -> dict[str, Any]:
        judged = self.in_time + self.missed
        return {"messages": self.messages, "conversations": self.conversations, "replies": self.replies,
                "answered": self.answered, "in_time": self.in_time, "missed": self.missed, "pending": pending,
                "reply_rate": round(self.in_time / judged, 4) if judged else None,
                "avg_response_s": round(self.latency_sum / self.answered, 1) if self.answered else None}


@dataclass(slots=True)
class _Wait:
    shop_id: str
    start: float
    counted: bool


@functools.lru_cache(maxsize=4096)
def _local_minute(tz: str, minute: int) -> int:
    """Minutes after local midnight in ``tz`` of the epoch minute ``minute`` (cached: waits
    start in the same few minutes, and a time-zone conversion costs microseconds)."""
    local = datetime.fromtimestamp(minute * 60, ZoneInfo(tz))
    return local.hour * 60 + local.minute


class Today:
    """The day's figures per shop and agent, with hourly series, in ``defaults.timezone``."""

    def __init__(self, service: Service, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.clock = clock
        self.day = ""
        self.day_start = 0.0
        self.day_end = 0.0
        self.seq = 0
        self.outbox_id = 0
        self.waits: dict[str, _Wait] = {}
        self.by_key: dict[tuple[str, str], _Figures] = {}
        self.hours: dict[tuple[str, int], list[int]] = {}
        self.received: set[tuple[str, str]] = set()
        self.answered_once: set[str] = set()
        self._backlog: list[tuple[list[tuple], dict[int, int]]] | None = []
        self._loaded = asyncio.Event()

    # -- the day ---------------------------------------------------------------------------------

    def _tz(self) -> ZoneInfo:
        return ZoneInfo(self.service.config.main.defaults.timezone)

    def _roll(self, ts: float) -> None:
        """Start the day that holds ``ts`` (callers roll when ``ts`` is past ``day_end``):
        yesterday's figures and open waits are dropped, as a supervisor's day board does at
        midnight."""
        tz = self._tz()
        local = datetime.fromtimestamp(ts, tz).date()
        self.day = local.isoformat()
        self.day_start = datetime(local.year, local.month, local.day, tzinfo=tz).timestamp()
        nxt = local + timedelta(days=1)
        self.day_end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp()
        self.waits.clear()
        self.by_key.clear()
        self.hours.clear()
        self.received.clear()
        self.answered_once.clear()

    def _fig(self, shop_id: str, agent_id: str | None) -> _Figures:
        key = (shop_id, agent_id or "")
        fig = self.by_key.get(key)
        if fig is None:
            fig = self.by_key[key] = _Figures()
        return fig

    def _hour(self, shop_id: str, ts: float) -> list[int]:
        key = (shop_id, int((ts - self.day_start) // 3600))
        row = self.hours.get(key)
        if row is None:
            row = self.hours[key] = [0, 0, 0]
        return row

    def _in_window(self, shop_id: str, ts: float) -> bool:
        """Whether a wait starting at ``ts`` counts for the 3-minute rate: inside
        ``defaults.reply_window`` in the shop's time zone, the same rule as ``fenliu stats``."""
        defaults = self.service.config.main.defaults
        shop = self.service.config.shops.get(shop_id)
        tz = (shop.timezone if shop else None) or defaults.timezone
        return defaults.in_reply_window(_local_minute(tz, int(ts // 60)))

    # -- what happened ---------------------------------------------------------------------------

    def _message(self, shop_id: str, cid: str, action: str | None, ts: float) -> None:
        self._fig(shop_id, None).messages += 1
        self._hour(shop_id, ts)[0] += 1
        if (action == "assigned" or action == "queued") and cid not in self.waits:
            first = cid not in self.answered_once
            self.waits[cid] = _Wait(shop_id, ts, first and self._in_window(shop_id, ts))

    def _assigned(self, shop_id: str, agent_id: str, cid: str) -> None:
        key = (agent_id, cid)
        if key not in self.received:
            self.received.add(key)
            self._fig(shop_id, agent_id).conversations += 1

    def _reply(self, shop_id: str, cid: str, agent_id: str | None, ts: float) -> None:
        fig = self._fig(shop_id, agent_id)
        fig.replies += 1
        wait = self.waits.pop(cid, None)
        self.answered_once.add(cid)
        if wait is None:
            return
        latency = max(0.0, ts - wait.start)
        fig.answered += 1
        fig.latency_sum += latency
        if wait.counted:
            row = self._hour(shop_id, wait.start)
            if latency <= self.service.config.main.defaults.reply_within_s:
                fig.in_time += 1
                row[1] += 1
            else:
                fig.missed += 1
            row[2] += 1

    def _close(self, shop_id: str, cid: str) -> None:
        self.answered_once.discard(cid)
        wait = self.waits.pop(cid, None)
        if wait is not None and wait.counted:
            self._fig(shop_id, None).missed += 1
            self._hour(shop_id, wait.start)[2] += 1

    # -- live: the rows the service committed -----------------------------------------------------

    def feed(self, rows: list[tuple], ids: dict[int, int]) -> None:
        """Count one committed batch of journal rows (the service's, with ``Decision`` structs;
        ``ids`` are the outbox ids of its reply rows by index). Called on the event loop after
        every commit; while :meth:`load` reads the store, batches wait and are counted after it."""
        if self._backlog is not None:
            self._backlog.append((rows, ids))
            return
        self._apply(rows, ids)

    def _apply(self, rows: list[tuple], ids: dict[int, int], seq_after: int = 0, outbox_after: int = 0) -> None:
        for index, row in enumerate(rows):
            kind = row[0]
            if kind == "message" or kind == "event" or kind == "tick":
                _, seq, clock, shop_id, msg_id, cid, body, decisions = row
                if seq <= seq_after or clock < self.day_start:
                    continue
                if clock >= self.day_end:
                    self._roll(clock)
                if kind == "message":
                    action = None
                    for d in decisions:
                        if d.msg_id == msg_id:
                            action = d.action
                            break
                    self._message(shop_id, cid, action, clock)
                elif kind == "event" and cid and body is not None and CLOSE_EVENT in body:
                    self._close(shop_id, cid)
                for d in decisions:
                    if d.action == "assigned" and d.agent_id is not None:
                        self._assigned(d.shop_id, d.agent_id, d.conversation_id)
            elif kind == "reply":
                _, shop_id, cid, _buyer, agent_id, _text, ts = row
                rid = ids.get(index)
                if (rid is not None and rid <= outbox_after) or ts < self.day_start:
                    continue
                if ts >= self.day_end:
                    self._roll(ts)
                self._reply(shop_id, cid, agent_id, ts)

    # -- at start: what the store holds for today --------------------------------------------------

    async def load(self) -> None:
        """Read today's figures from the store (in a worker thread, once), then count the
        batches committed meanwhile that the read did not see."""
        try:
            await asyncio.to_thread(self._read_store, self.clock())
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

    def _read_store(self, now: float) -> None:
        self._roll(now)
        path = self.service.store.path
        c = read_only(path)
        try:
            c.execute("BEGIN")  # one snapshot: the journal and the decisions agree
            self._read(c)
        finally:
            c.close()

    def _read(self, c: sqlite3.Connection) -> None:
        seq = _first_at(c, "journal", "seq", "clock", self.day_start) - 1
        decision_id = _first_at(c, "decisions", "id", "seq", seq + 1) - 1
        outbox_id = _first_at(c, "outbox", "id", "ts", self.day_start) - 1
        events: list[tuple[float, int, tuple]] = []
        for clock, shop_id, cid, action in c.execute(
                "SELECT j.clock, j.shop_id, j.conversation_id, d.action FROM journal j "
                "LEFT JOIN decisions d ON d.seq = j.seq AND d.msg_id = j.msg_id AND d.shop_id = j.shop_id "
                "WHERE j.seq > ? AND j.kind = 'message' ORDER BY j.seq", (seq,)):
            events.append((clock, 0, ("message", shop_id, cid, action)))
        for clock, shop_id, cid in c.execute(
                "SELECT clock, shop_id, conversation_id FROM journal WHERE seq > ? AND kind = 'event' "
                "AND CAST(body AS TEXT) LIKE ?", (seq, f"%{CLOSE_EVENT.decode()}%")):
            events.append((clock, 2, ("close", shop_id, cid, None)))
        for shop_id, agent_id, cid in c.execute(
                "SELECT shop_id, agent_id, conversation_id FROM decisions WHERE id > ? AND action = 'assigned' "
                "AND agent_id IS NOT NULL", (decision_id,)):
            self._assigned(shop_id, agent_id, cid)
        for ts, shop_id, cid, agent_id in c.execute(
                "SELECT ts, shop_id, conversation_id, agent_id FROM outbox WHERE id > ? ORDER BY id", (outbox_id,)):
            events.append((ts, 1, ("reply", shop_id, cid, agent_id)))
        self.seq = c.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()[0]
        self.outbox_id = c.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
        events.sort(key=lambda e: (e[0], e[1]))
        for ts, _, (kind, shop_id, cid, extra) in events:
            if not self.day_start <= ts < self.day_end:
                continue
            if kind == "message":
                self._message(shop_id, cid, extra, ts)
            elif kind == "reply":
                self._reply(shop_id, cid, extra, ts)
            else:
                self._close(shop_id, cid)

    # -- reading -----------------------------------------------------------------------------------

    def figures(self, shops: set[str] | None = None, agent_id: str | None = None) -> dict[str, Any]:
        """Totals for ``shops`` (all when ``None``), or for one agent; with hourly series."""
        now = self.clock()
        if now >= self.day_end and self._backlog is None:
            self._roll(now)
        total = _Figures()
        per_agent: dict[str, _Figures] = {}
        for (shop_id, aid), fig in self.by_key.items():
            if shops is not None and shop_id not in shops:
                continue
            if agent_id is not None and aid != agent_id:
                continue
            total.add(fig)
            if aid:
                per_agent.setdefault(aid, _Figures()).add(fig)
        overdue = pending = 0
        within = self.service.config.main.defaults.reply_within_s
        for cid, wait in self.waits.items():
            if (shops is not None and wait.shop_id not in shops) or not wait.counted:
                continue
            if agent_id is not None and self.service.owner.get(cid) != agent_id:
                continue
            if now - wait.start > within:
                overdue += 1
            else:
                pending += 1
        total.missed += overdue
        hours = []
        for h in range(24):
            row = [0, 0, 0]
            for (shop_id, hh), vals in self.hours.items():
                if hh == h and (shops is None or shop_id in shops):
                    row = [a + b for a, b in zip(row, vals, strict=True)]
            hours.append({"hour": h, "messages": row[0], "in_time": row[1], "judged": row[2]})
        out = {"day": self.day, "updated": now, **total.as_json(pending), "reply_window_s": within}
        if agent_id is None:
            out["hours"] = hours
            out["agents"] = {aid: f.as_json() for aid, f in sorted(per_agent.items())}
        return out


def _first_at(c: sqlite3.Connection, table: str, key: str, col: str, value: float) -> int:
    """The smallest ``key`` whose ``col`` is at least ``value`` (``col`` grows with ``key``),
    by binary search on the primary key; one past the end when there is none."""
    top = c.execute(f"SELECT max({key}) FROM {table}").fetchone()[0]
    if top is None:
        return 1
    lo, hi = 1, top + 1
    while lo < hi:
        mid = (lo + hi) // 2
        row = c.execute(f"SELECT {key}, {col} FROM {table} WHERE {key} >= ? ORDER BY {key} LIMIT 1", (mid,)).fetchone()
        if row is None or row[1] >= value:
            hi = mid
        else:
            lo = mid + 1
    return lo

