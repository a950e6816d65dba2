"""The platform's figures, one implementation: the dashboard, the workbench's status bar
(``GET /v1/today``, router/service/today.py), ``fenliu stats`` and ``GET /v1/stats`` (router/storage/stats.py)
all fold the same journal rows through :class:`Ledger`, so they agree to the message.

The rows are the service's own (``("message" | "event" | "tick", seq, clock, shop_id, msg_id,
conversation_id, body, decisions)`` and ``("reply", shop_id, cid, buyer_id, agent_id, text, ts)``):
live from :attr:`router.service.service.Service.on_journaled`, or read back from the store in the same
shape and order by :func:`read_rows`. A period is read on its own, as a day board is: only rows
inside it are folded, so a conversation already open when it starts counts from its first buyer
message inside it. Definitions: docs/stats.md.

Who is charged: every judgement belongs to a cell ``(shop, agent, skill)``. A 3-minute window
that lapses is charged to the agent holding the conversation at the moment it lapsed (``""``, the
queue, when nobody held it: queued, or with the bot); an answer in time to the agent who gave it.
Session-level counts (sessions, bot-only, blocked-only) sit in the cell whose agent is ``None``.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec

from router.core.config import Config
from router.core.models import CloseEvent, Decision, RatingEvent, TransferEvent
from router.storage.writer import CLOSE_EVENT


class _OrderId(msgspec.Struct):
    order_id: str | None = None


class _OrderOnly(msgspec.Struct):
    """What the figures read of a stored message: which order it asked about. Decoding the whole
    ``Message`` again (validated when it came in) cost twice as much, for every message that
    names an order."""

    order: _OrderId | None = None


_decode_order = msgspec.json.Decoder(_OrderOnly)
_decode_decision = msgspec.json.Decoder(Decision)
_decode_event = msgspec.json.Decoder(CloseEvent | TransferEvent | RatingEvent)
#: The events that shape sessions, by how their bodies say so: the rest (accept, status, …) are
#: skipped without decoding.
_SESSION_EVENTS = (CLOSE_EVENT, b'"type":"transfer"', b'"type":"rating"')
#: The queue's key in the agent dimension: time nobody held the conversation.
QUEUE = ""


class Row(msgspec.Struct):
    """Figures for one group: the period, a shop, a skill group, an agent, or the queue."""

    key: str
    sessions: int = 0
    messages: int = 0
    bot_only: int = 0
    blocked_only: int = 0
    needed_human: int = 0
    first_response_s_avg: float | None = None
    first_response_s_p90: float | None = None
    human_response_s_avg: float | None = None
    responses: int = 0
    replies: int = 0
    reply_3min_eligible: int = 0
    reply_3min_hits: int = 0
    reply_3min_rate: float | None = None
    pending: int = 0
    queued_sessions: int = 0
    queue_wait_s_avg: float | None = None
    queue_wait_s_max: float | None = None
    transfers: int = 0
    bot_answered_share: float | None = None
    ratings: int = 0
    rating_avg: float | None = None
    satisfaction_rate: float | None = None
    converted: int = 0
    conversion_rate: float | None = None


class Stats(msgspec.Struct):
    since: float | None
    until: float | None
    total: Row
    by_shop: list[Row]
    by_skill: list[Row]
    by_agent: list[Row]
    #: What nobody held: windows that lapsed while queued or with the bot, queue waits.
    queue: Row | None = None
    #: Forbidden words in refused replies, per agent and category (客服质检; router/storage/stats.py).
    violations: list[Violations] = []


class Violations(msgspec.Struct):
    """How often one agent's replies were refused for words of one category (``tag``, empty when
    the list names none), and the words most often behind it."""

    agent_id: str
    tag: str
    hits: int
    words: list[str]


class Cell:
    """Additive counters of one ``(shop, agent, skill)``."""

    __slots__ = ("sessions", "received", "messages", "bot_only", "blocked_only", "replies", "first", "resp_n",
                 "resp_sum", "eligible", "hits", "pending", "queue_waits", "transfers", "ratings", "converted")

    def __init__(self) -> None:
        self.sessions = self.received = self.messages = self.bot_only = self.blocked_only = self.replies = 0
        self.resp_n = self.eligible = self.hits = self.pending = self.transfers = self.converted = 0
        self.resp_sum = 0.0
        self.first: list[float] = []
        self.queue_waits: list[float] = []
        self.ratings: list[int] = []

    def add(self, o: Cell) -> None:
        for f in ("sessions", "received", "messages", "bot_only", "blocked_only", "replies", "resp_n", "resp_sum",
                  "eligible", "hits", "pending", "transfers", "converted"):
            setattr(self, f, getattr(self, f) + getattr(o, f))
        self.first.extend(o.first)
        self.queue_waits.extend(o.queue_waits)
        self.ratings.extend(o.ratings)


class _Part:
    """What one agent (or the queue) did in one session."""

    __slots__ = ("messages", "replies", "resp_n", "resp_sum", "transfers", "ratings")

    def __init__(self) -> None:
        self.messages = self.replies = self.resp_n = self.transfers = 0
        self.resp_sum = 0.0
        self.ratings: list[int] = []


class Session:
    """One conversation from its first buyer message in the period to its close."""

    __slots__ = ("cid", "shop", "buyer", "start", "skill", "holder", "agents", "messages", "blocked", "answered",
                 "parts", "clock_start", "eligible", "judged", "first_reply", "waiting", "queued_at", "queue_wait",
                 "end", "orders_asked", "last_agent")

    def __init__(self, cid: str, shop: str, buyer: str, start: float) -> None:
        self.cid, self.shop, self.buyer, self.start = cid, shop, buyer, start
        self.skill: str | None = None
        self.holder: str | None = None
        self.agents: list[str] = []
        self.messages = self.blocked = self.answered = 0
        self.parts: dict[str, _Part] = {}
        self.clock_start: float | None = None  # the 3-minute clock: the first message not blocked
        self.eligible = False
        self.judged: tuple[str, bool] | None = None  # (charged to, in time)
        self.first_reply: tuple[float, str] | None = None
        self.waiting: float | None = None  # the earliest buyer message no reply has answered yet
        self.queued_at: float | None = None
        self.queue_wait: float | None = None
        self.end: float | None = None
        self.orders_asked: set[str] = set()
        self.last_agent: str | None = None

    def part(self, who: str | None) -> _Part:
        key = who or QUEUE
        p = self.parts.get(key)
        if p is None:
            p = self.parts[key] = _Part()
        return p

    @property
    def key_skill(self) -> str:
        return self.skill or "-"


@functools.lru_cache(maxsize=4096)
def _local_minute(tz: str, minute: int) -> int:
    """Minutes after local midnight in ``tz`` of the epoch minute ``minute`` (cached: sessions
    start in the same few minutes, and a time-zone conversion costs microseconds)."""
    local = datetime.fromtimestamp(minute * 60, ZoneInfo(tz))
    return local.hour * 60 + local.minute


class Ledger:
    """The fold: feed it rows in commit order (:meth:`apply`), read :meth:`stats` at any time.

    Closed sessions are added to the cells once; open ones are judged at read time against
    ``now`` (a window past 180 s is a miss charged to whoever holds the conversation then)."""

    def __init__(self, config: Config, since: float | None = None, until: float | None = None,
                 keep_sessions: bool = False) -> None:
        self.config = config
        self.since, self.until = since, until
        self.within = config.main.defaults.reply_within_s
        self.open: dict[str, Session] = {}
        self.closed: dict[str, tuple[str, str | None, str]] = {}  # cid → (shop, last agent, skill), for late ratings
        self.cells: dict[tuple[str, str | None, str], Cell] = {}
        self.hours: dict[tuple[str, int], list[int]] = {}  # (shop, hour since `since`) → [messages, in time, judged]
        self.kept: list[Session] | None = [] if keep_sessions else None
        self.last_clock = since or 0.0
        self._windows: dict[tuple[str, int], bool] = {}

    # -- folding ---------------------------------------------------------------------------------

    def apply(self, rows: Iterable[tuple]) -> None:
        since, until = self.since, self.until
        message, decision = self._message, self._decision
        for row in rows:
            kind = row[0]
            if kind == "message":  # the most common row, its period check inline (≈ 0.3 µs a row)
                clock = row[2]
                if (since is not None and clock < since) or (until is not None and clock >= until):
                    continue
                if clock > self.last_clock:
                    self.last_clock = clock
                msg_id, decisions = row[4], row[7]
                own = None
                for d in decisions:
                    if d.msg_id == msg_id:
                        own = d
                        break
                message(row[3], row[5], row[6], own, clock)
                for d in decisions:
                    if d is not own:
                        decision(d, clock)
            elif kind == "reply":
                _, shop_id, cid, _buyer, agent_id, _text, ts = row
                if agent_id is not None and self._inside(ts):
                    self._reply(shop_id, cid, agent_id, ts)
            elif kind in ("event", "tick"):
                _, _seq, clock, shop_id, msg_id, cid, body, decisions = row
                if not self._inside(clock):
                    continue
                if kind == "event" and body is not None and any(m in body for m in _SESSION_EVENTS):
                    try:
                        self._event(_decode_event.decode(body), clock)
                    except (msgspec.ValidationError, msgspec.DecodeError):
                        pass
                for d in decisions:
                    decision(d, clock)

    def _inside(self, ts: float) -> bool:
        if (self.since is not None and ts < self.since) or (self.until is not None and ts >= self.until):
            return False
        if ts > self.last_clock:
            self.last_clock = ts
        return True

    def _cell(self, shop: str, agent: str | None, skill: str) -> Cell:
        key = (shop, agent, skill)
        c = self.cells.get(key)
        if c is None:
            c = self.cells[key] = Cell()
        return c

    def _settle(self, s: Session, t: float) -> None:
        """A window still open at ``t`` past its 180 s lapsed before ``t``: charge whoever held the
        conversation then (nothing about it changed since, or it would have been settled)."""
        if s.judged is None and s.clock_start is not None and t - s.clock_start > self.within:
            s.judged = (s.holder or QUEUE, False)

    def _message(self, shop: str, cid: str, body: bytes | None, own: Decision | None, ts: float) -> None:
        s = self.open.get(cid)
        if s is None:
            buyer = cid.split(":", 1)[1] if ":" in cid else cid
            s = self.open[cid] = Session(cid, shop, buyer, ts)
            self.closed.pop(cid, None)
        else:
            self._settle(s, ts)
        s.messages += 1
        if self.since is not None:
            key = (shop, int((ts - self.since) // 3600))
            hour = self.hours.get(key)
            if hour is None:
                hour = self.hours[key] = [0, 0, 0]
            hour[0] += 1
        if body is not None and body.find(b'"order"') >= 0:  # find: ``in`` first tries an int
            msg = _decode_order.decode(body)
            if msg.order is not None and msg.order.order_id:
                s.orders_asked.add(msg.order.order_id)
        action = own.action if own is not None else None
        if own is not None:
            self._decision(own, ts)
        if action == "blocked":
            s.blocked += 1
        else:
            if action == "answered":
                s.answered += 1
            if s.clock_start is None:
                s.clock_start = ts
                s.eligible = self._in_window(shop, int(ts // 60))
            if s.waiting is None:
                s.waiting = ts
        s.part(s.holder).messages += 1

    def _in_window(self, shop: str, minute: int) -> bool:
        """Whether the epoch minute ``minute`` is inside the reply window in the shop's time zone,
        remembered per shop and minute (new sessions start in the same few minutes; the zone's
        conversion and the window's parse cost ≈ 1.5 µs a session)."""
        key = (shop, minute)
        found = self._windows.get(key)
        if found is None:
            if len(self._windows) > 4096:
                self._windows.clear()
            tz = (sh.timezone if (sh := self.config.shops.get(shop)) else None) or self.config.main.defaults.timezone
            found = self._windows[key] = self.config.main.defaults.in_reply_window(_local_minute(tz, minute))
        return found

    def _decision(self, d: Decision, ts: float) -> None:
        s = self.open.get(d.conversation_id)
        if s is None:
            return
        self._settle(s, ts)
        if s.skill is None and d.skill:
            s.skill = d.skill
        if d.action == "assigned" and d.agent_id:
            s.holder = s.last_agent = d.agent_id
            if d.agent_id not in s.agents:
                s.agents.append(d.agent_id)
            if s.queued_at is not None and s.queue_wait is None:
                s.queue_wait = ts - s.queued_at
        elif d.action == "queued":
            s.holder = None
            if s.queued_at is None:
                s.queued_at = ts

    def _reply(self, shop: str, cid: str, agent: str, ts: float) -> None:
        s = self.open.get(cid)
        if s is None:  # a reply to a conversation the buyer has not written to in the period
            self._cell(shop, agent, "-").replies += 1
            return
        self._settle(s, ts)
        p = s.part(agent)
        p.replies += 1
        s.last_agent = agent
        if s.first_reply is None:
            s.first_reply = (ts, agent)
        if s.waiting is not None:
            p.resp_n += 1
            p.resp_sum += ts - s.waiting
            s.waiting = None
        if s.judged is None and s.clock_start is not None:
            s.judged = (agent, True)

    def _event(self, ev: CloseEvent | TransferEvent | RatingEvent, ts: float) -> None:
        cid = ev.conversation_id
        s = self.open.get(cid)
        if isinstance(ev, RatingEvent):
            if s is not None:
                s.part(s.holder or s.last_agent).ratings.append(ev.score)
            elif cid in self.closed:
                shop, agent, skill = self.closed[cid]
                self._cell(shop, agent or QUEUE, skill).ratings.append(ev.score)
            return
        if s is None:
            return
        self._settle(s, ts)
        if isinstance(ev, TransferEvent):
            s.part(s.holder).transfers += 1
            return
        if s.judged is None and s.clock_start is not None:
            s.judged = (s.holder or QUEUE, False)  # closed unanswered: the window ends at the close
        s.end = ts
        del self.open[cid]
        self.closed[cid] = (s.shop, s.last_agent, s.key_skill)
        self._contribute(s, None, self.cells, self.hours)
        if self.kept is not None:
            self.kept.append(s)

    # -- what a session adds ---------------------------------------------------------------------

    def _contribute(self, s: Session, now: float | None, cells: dict, hours: dict | None) -> None:
        """Add ``s`` to ``cells`` (and the hourly series); ``now`` judges a still open window."""
        skill = s.key_skill

        def cell(agent: str | None) -> Cell:
            key = (s.shop, agent, skill)
            c = cells.get(key)
            if c is None:
                c = cells[key] = Cell()
            return c

        base = cell(None)
        base.sessions += 1
        blocked_only = s.blocked == s.messages
        bot_only = s.answered == s.messages - s.blocked and s.answered > 0 and s.first_reply is None and not s.agents
        base.blocked_only += blocked_only
        base.bot_only += bot_only
        if s.queue_wait is not None:
            cell(QUEUE).queue_waits.append(s.queue_wait)
        for agent in s.agents:
            cell(agent).received += 1
        for who, p in s.parts.items():
            c = cell(who)
            c.messages += p.messages
            c.replies += p.replies
            c.resp_n += p.resp_n
            c.resp_sum += p.resp_sum
            c.transfers += p.transfers
            c.ratings.extend(p.ratings)
        if s.first_reply is not None:
            cell(s.first_reply[1]).first.append(s.first_reply[0] - (s.clock_start if s.clock_start is not None else s.start))
        judged = s.judged
        if judged is None and s.clock_start is not None and now is not None and now - s.clock_start > self.within:
            judged = (s.holder or QUEUE, False)
        if s.eligible:
            if judged is None:
                cell(s.holder or QUEUE).pending += 1
            else:
                c = cell(judged[0])
                c.eligible += 1
                c.hits += judged[1]
                if hours is not None and self.since is not None:
                    key = (s.shop, int((s.clock_start - self.since) // 3600))  # type: ignore[operator]
                    h = hours.get(key)
                    if h is None:
                        h = hours[key] = [0, 0, 0]
                    h[1] += judged[1]
                    h[2] += 1

    # -- reading ---------------------------------------------------------------------------------

    def sessions(self) -> Iterator[Session]:
        """Every session folded (closed ones only when kept), closed first."""
        yield from self.kept or ()
        yield from self.open.values()

    def snapshot(self, now: float) -> tuple[dict[tuple[str, str | None, str], Cell], dict[tuple[str, int], list[int]]]:
        """The cells and hours with the open sessions judged at ``now``."""
        cells = {k: _copy(c) for k, c in self.cells.items()}
        hours = {k: list(v) for k, v in self.hours.items()}
        for s in self.open.values():
            self._contribute(s, now, cells, hours)
        return cells, hours

    def stats(self, now: float, *, shops: Iterable[str] | None = None, shop: str | None = None,
              agent: str | None = None,
              extra: Callable[[dict[tuple[str, str | None, str], Cell]], None] | None = None,
              conversion: bool = False) -> Stats:
        """The figures at ``now``, of ``shops`` (all when ``None``) or one ``shop``; with ``agent``,
        only what is charged to that agent."""
        cells, _ = self.snapshot(now)
        if extra is not None:
            extra(cells)
        allowed = set(shops) if shops is not None else None
        total, queue = Cell(), Cell()
        by_shop: dict[str, Cell] = {}
        by_skill: dict[str, Cell] = {}
        by_agent: dict[str, Cell] = {}
        for (sh, who, skill), c in cells.items():
            if (allowed is not None and sh not in allowed) or (shop is not None and sh != shop):
                continue
            if agent is not None and who != agent:
                continue
            total.add(c)
            by_shop.setdefault(sh, Cell()).add(c)
            by_skill.setdefault(skill, Cell()).add(c)
            if who == QUEUE:
                queue.add(c)
            elif who is not None:
                by_agent.setdefault(who, Cell()).add(c)
        per = agent is not None

        def rows(groups: dict[str, Cell], as_agent: bool = False) -> list[Row]:
            return [_row(k, groups[k], as_agent, conversion) for k in sorted(groups)]

        return Stats(self.since, self.until, _row("total", total, per, conversion), rows(by_shop, per),
                     rows(by_skill, per), rows(by_agent, True), None if per else _row("queue", queue, True, conversion))

    def hourly(self, now: float, shops: Iterable[str] | None = None) -> list[dict[str, int]]:
        """Per hour since ``since``: buyer messages, windows answered in time, windows judged."""
        _, hours = self.snapshot(now)
        allowed = set(shops) if shops is not None else None
        out = []
        for h in range(24):
            row = [0, 0, 0]
            for (sh, hh), vals in hours.items():
                if hh == h and (allowed is None or sh in allowed):
                    row = [a + b for a, b in zip(row, vals, strict=True)]
            out.append({"hour": h, "messages": row[0], "in_time": row[1], "judged": row[2]})
        return out


def _copy(c: Cell) -> Cell:
    n = Cell()
    n.add(c)
    return n


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 3) if xs else None


def _p90(xs: list[float]) -> float | None:
    if not xs:
        return None
    ys = sorted(xs)
    return round(ys[min(len(ys) - 1, int(0.9 * len(ys)))], 3)


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _row(key: str, c: Cell, as_agent: bool, conversion: bool) -> Row:
    """An agent's (or the queue's) ``sessions`` are those it received (took part in)."""
    sessions = c.received if as_agent else c.sessions
    r = Row(key, sessions=sessions, messages=c.messages, replies=c.replies, responses=c.resp_n,
            reply_3min_eligible=c.eligible, reply_3min_hits=c.hits, pending=c.pending, transfers=c.transfers,
            ratings=len(c.ratings), queued_sessions=len(c.queue_waits), converted=c.converted)
    if not as_agent:
        r.bot_only, r.blocked_only = c.bot_only, c.blocked_only
        r.needed_human = c.sessions - c.bot_only - c.blocked_only
        r.bot_answered_share = _ratio(c.bot_only, c.sessions - c.blocked_only)
        if conversion:
            r.conversion_rate = _ratio(c.converted, c.sessions - c.blocked_only)
    elif conversion:
        r.conversion_rate = _ratio(c.converted, sessions)
    r.first_response_s_avg, r.first_response_s_p90 = _mean(c.first), _p90(c.first)
    r.human_response_s_avg = round(c.resp_sum / c.resp_n, 3) if c.resp_n else None
    r.reply_3min_rate = _ratio(c.hits, c.eligible)
    r.queue_wait_s_avg = _mean(c.queue_waits)
    r.queue_wait_s_max = round(max(c.queue_waits), 3) if c.queue_waits else None
    r.rating_avg = _mean([float(x) for x in c.ratings])
    r.satisfaction_rate = _ratio(sum(1 for x in c.ratings if x >= 4), len(c.ratings))
    return r


# -- reading the store in the service's row shape ------------------------------------------------------


def first_at(c: sqlite3.Connection, table: str, key: str, col: str, value: float) -> int:
    """The smallest ``key`` whose ``col`` is at least ``value`` (``col`` grows with ``key``),
    by binary search on the primary key; one past the end when there is none."""
    top = c.execute(f"SELECT max({key}) FROM {table}").fetchone()[0]
    if top is None:
        return 1
    lo, hi = c.execute(f"SELECT min({key}) FROM {table}").fetchone()[0], top + 1
    while lo < hi:
        mid = (lo + hi) // 2
        row = c.execute(f"SELECT {key}, {col} FROM {table} WHERE {key} >= ? ORDER BY {key} LIMIT 1", (mid,)).fetchone()
        if row is None:
            hi = mid
        elif row[1] >= value:
            hi = mid
        else:
            lo = row[0] + 1
    return lo


def read_rows(c: sqlite3.Connection, since: float | None = None, until: float | None = None
              ) -> tuple[list[tuple], int, int]:
    """The journal rows and replies of ``[since, until)`` as the service committed them (replies
    placed by their clock; at an equal clock the journal entry first), and the last journal seq
    and outbox id read. Run inside one read transaction so the tables agree."""
    seq0 = first_at(c, "journal", "seq", "clock", since) - 1 if since is not None else 0
    out0 = first_at(c, "outbox", "id", "ts", since) - 1 if since is not None else 0
    top_seq = c.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()[0]
    top_out = c.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
    end = until if until is not None else float("inf")
    decisions: dict[int, list[Decision]] = {}
    for seq, body in c.execute("SELECT seq, body FROM decisions WHERE seq > ? ORDER BY id", (seq0,)):
        decisions.setdefault(seq, []).append(_decode_decision.decode(body))
    events: list[tuple[float, int, int, tuple]] = []
    for seq, kind, clock, shop_id, msg_id, cid, body in c.execute(
            "SELECT seq, kind, clock, shop_id, msg_id, conversation_id, body FROM journal "
            "WHERE seq > ? AND kind IN ('message', 'event', 'tick') ORDER BY seq", (seq0,)):
        if clock >= end:
            continue
        events.append((clock, 0, seq, (kind, seq, clock, shop_id, msg_id, cid,
                                       bytes(body) if body is not None else None, decisions.get(seq, []))))
    for rid, shop_id, cid, buyer, agent, text, ts in c.execute(
            "SELECT id, shop_id, conversation_id, buyer_id, agent_id, text, ts FROM outbox WHERE id > ? ORDER BY id",
            (out0,)):
        if ts < end:
            events.append((ts, 1, rid, ("reply", shop_id, cid, buyer, agent, text, ts)))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    return [e[3] for e in events], top_seq, top_out
