"""Service statistics computed from the store: the figures agents and shops are judged by.

Everything is derived from the journal (every message and event with the clock at which it was
routed), the decisions, the agents' replies (outbox) and the order table, so the figures can be
recomputed for any period after the fact. A *session* is one conversation from its first message
to its close (a buyer who comes back later opens a new session with the same conversation id).

Definitions (also in docs/stats.md):

- first response time: from a session's first buyer message to the first human reply;
- average human response time: for every human reply, from the earliest buyer message it
  answers (the first one since the previous reply) to the reply;
- 3-minute human reply rate (Pinduoduo's 3分钟人工回复率): sessions whose first message falls in
  the platform window (``defaults.reply_window``, 08:00–23:00 shop time) and that needed a reply,
  answered by a human within ``defaults.reply_within_s`` (180 s). Bot answers do not count, so bot-only sessions count as misses; sessions
  whose every message was blocked, and open ones still inside their 180 s, are left out;
- queue wait: from a session's first ``queued`` decision to its next assignment;
- bot-answered share: sessions settled by the bot alone;
- satisfaction: buyers' ``rating`` events (1–5); satisfied = 4 or 5;
- inquiry-to-order conversion (询单转化率): sessions after which the buyer had an order at that
  shop, paid or further, updated within ``conversion_window_h`` of the session's start — not
  counting orders the buyer asked about in the session (those existed before it).
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec

from router.config import Config
from router.models import CloseEvent, Message, Order, RatingEvent, TransferEvent
from router.writer import CLOSE_EVENT

_decode_msg = msgspec.json.Decoder(Message)
#: The events that shape sessions, by how their bodies say so: the rest (accept, status, …) are
#: skipped without decoding.
_SESSION_EVENTS = (CLOSE_EVENT, b'"type":"transfer"', b'"type":"rating"')
_decode_order = msgspec.json.Decoder(Order)
_PAID = {"paid", "shipped", "delivered", "completed", "finished", "signed"}


class Row(msgspec.Struct):
    """Figures for one group (the whole period, a shop, a skill or an agent)."""

    key: str
    sessions: int = 0
    messages: int = 0
    bot_only: int = 0
    blocked_only: int = 0
    needed_human: int = 0
    first_response_s_avg: float | None = None
    first_response_s_p90: float | None = None
    human_response_s_avg: float | None = None
    replies: int = 0
    reply_3min_eligible: int = 0
    reply_3min_hits: int = 0
    reply_3min_rate: float | None = None
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


class _Session:
    __slots__ = ("cid", "shop", "buyer", "start", "skill", "agents", "messages", "answered", "blocked",
                 "first_reply", "replies", "response", "queued_at", "wait", "transfers", "ratings", "end",
                 "msg_times", "reply_times", "orders_asked")

    def __init__(self, cid: str, shop: str, buyer: str, start: float) -> None:
        self.cid, self.shop, self.buyer, self.start = cid, shop, buyer, start
        self.skill: str | None = None
        self.agents: list[str] = []
        self.messages = 0
        self.answered = 0
        self.blocked = 0
        self.first_reply: float | None = None
        self.replies = 0
        self.response: list[float] = []
        self.queued_at: float | None = None
        self.wait: float | None = None
        self.transfers = 0
        self.ratings: list[int] = []
        self.end: float | None = None
        self.msg_times: list[float] = []
        self.reply_times: list[float] = []
        self.orders_asked: set[str] = set()

    def measure_replies(self) -> None:
        """First response and per-reply response times from the merged timeline: a reply answers
        the earliest buyer message since the previous reply."""
        self.reply_times.sort()
        self.replies = len(self.reply_times)
        self.first_reply = self.reply_times[0] if self.reply_times else None
        waiting: float | None = None
        m = 0
        for r in self.reply_times:
            while m < len(self.msg_times) and self.msg_times[m] <= r:
                if waiting is None:
                    waiting = self.msg_times[m]
                m += 1
            if waiting is not None:
                self.response.append(r - waiting)
                waiting = None


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 3) if xs else None


def _p90(xs: list[float]) -> float | None:
    if not xs:
        return None
    ys = sorted(xs)
    return round(ys[min(len(ys) - 1, int(0.9 * len(ys)))], 3)


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def compute(conn: sqlite3.Connection, config: Config, *, since: float | None = None, until: float | None = None,
            shop: str | None = None, agent: str | None = None, shops: Iterable[str] | None = None,
            conversion_window_h: float = 24.0) -> Stats:
    """The statistics of sessions that started in ``[since, until)``, optionally for one shop or
    one agent, restricted to ``shops`` (an account's permitted shops) when given."""
    allowed = set(shops) if shops is not None else None
    sessions, by_seq = _sessions(conn)
    _replies(conn, sessions)
    _decisions(conn, sessions, by_seq)
    orders = _orders(conn)
    now = conn.execute("SELECT MAX(clock) FROM journal").fetchone()[0] or 0.0
    defaults = config.main.defaults
    within = defaults.reply_within_s
    tz_of = {sid: ZoneInfo(s.timezone or config.main.defaults.timezone) for sid, s in config.shops.items()}

    picked: list[_Session] = []
    for s in sessions:
        if since is not None and s.start < since or until is not None and s.start >= until:
            continue
        if shop is not None and s.shop != shop or allowed is not None and s.shop not in allowed:
            continue
        if agent is not None and agent not in s.agents:
            continue
        picked.append(s)

    def row(key: str, group: list[_Session]) -> Row:
        r = Row(key)
        first: list[float] = []
        response: list[float] = []
        waits: list[float] = []
        ratings: list[int] = []
        for s in group:
            r.sessions += 1
            r.messages += s.messages
            r.transfers += s.transfers
            r.replies += s.replies
            response.extend(s.response)
            ratings.extend(s.ratings)
            bot_only = s.answered == s.messages - s.blocked and s.answered > 0 and s.replies == 0 and not s.agents
            blocked_only = s.blocked == s.messages
            r.bot_only += bot_only
            r.blocked_only += blocked_only
            if not bot_only and not blocked_only:
                r.needed_human += 1
            if s.first_reply is not None:
                first.append(s.first_reply - s.start)
            if s.wait is not None:
                r.queued_sessions += 1
                waits.append(s.wait)
            pending = s.first_reply is None and s.end is None and now - s.start < within
            if not blocked_only and not pending:
                local = datetime.fromtimestamp(s.start, tz_of.get(s.shop, ZoneInfo("Asia/Shanghai")))
                if defaults.in_reply_window(local.hour * 60 + local.minute):
                    r.reply_3min_eligible += 1
                    if s.first_reply is not None and s.first_reply - s.start <= within:
                        r.reply_3min_hits += 1
            for order_id, status, updated in orders.get((s.shop, s.buyer), ()):
                if (status in _PAID and order_id not in s.orders_asked
                        and s.start <= updated <= s.start + conversion_window_h * 3600):
                    r.converted += 1
                    break
        r.first_response_s_avg, r.first_response_s_p90 = _mean(first), _p90(first)
        r.human_response_s_avg = _mean(response)
        r.reply_3min_rate = _ratio(r.reply_3min_hits, r.reply_3min_eligible)
        r.queue_wait_s_avg = _mean(waits)
        r.queue_wait_s_max = round(max(waits), 3) if waits else None
        r.bot_answered_share = _ratio(r.bot_only, r.sessions - r.blocked_only)
        r.ratings = len(ratings)
        r.rating_avg = _mean([float(x) for x in ratings])
        r.satisfaction_rate = _ratio(sum(1 for x in ratings if x >= 4), len(ratings))
        r.conversion_rate = _ratio(r.converted, r.sessions - r.blocked_only)
        return r

    def grouped(key_of) -> list[Row]:
        groups: dict[str, list[_Session]] = defaultdict(list)
        for s in picked:
            for k in key_of(s):
                groups[k].append(s)
        return [row(k, groups[k]) for k in sorted(groups)]

    return Stats(since, until, row("total", picked),
                 grouped(lambda s: [s.shop]),
                 grouped(lambda s: [s.skill or "-"]),
                 grouped(lambda s: sorted(set(s.agents)) if agent is None else [agent]))


def _sessions(conn: sqlite3.Connection) -> tuple[list[_Session], dict[int, _Session]]:
    """Split each conversation's journal into sessions at its close events; also which session
    each message's journal entry belongs to."""
    by_seq: dict[int, _Session] = {}
    open_: dict[str, _Session] = {}
    out: list[_Session] = []
    events = msgspec.json.Decoder(CloseEvent | TransferEvent | RatingEvent)
    last_closed: dict[str, _Session] = {}
    for seq, kind, clock, body in conn.execute(
        "SELECT seq, kind, clock, body FROM journal WHERE kind IN ('message', 'event') ORDER BY seq"
    ):
        if body is None:
            continue
        if kind == "message":
            msg = _decode_msg.decode(body)
            cid = f"{msg.shop_id}:{msg.buyer_id}"
            s = open_.get(cid)
            if s is None:
                s = open_[cid] = _Session(cid, msg.shop_id, msg.buyer_id, clock)
                out.append(s)
            s.messages += 1
            s.msg_times.append(clock)
            if msg.order is not None and msg.order.order_id:
                s.orders_asked.add(msg.order.order_id)
            by_seq[seq] = s
            continue
        if not any(marker in body for marker in _SESSION_EVENTS):
            continue
        try:
            ev = events.decode(body)
        except msgspec.ValidationError:
            continue
        if isinstance(ev, CloseEvent):
            s = open_.pop(ev.conversation_id, None)
            if s is not None:
                s.end = clock
                last_closed[ev.conversation_id] = s
        elif isinstance(ev, TransferEvent):
            s = open_.get(ev.conversation_id)
            if s is not None:
                s.transfers += 1
        else:
            s = open_.get(ev.conversation_id) or last_closed.get(ev.conversation_id)
            if s is not None:
                s.ratings.append(ev.score)
    return out, by_seq


def _decisions(conn: sqlite3.Connection, sessions: list[_Session], by_seq: dict[int, _Session]) -> None:
    """Skill, agents, bot answers, blocks and queue waits from the decisions, in journal order."""
    by_cid_open: dict[str, list[_Session]] = defaultdict(list)
    for s in sessions:
        by_cid_open[s.cid].append(s)

    def session_at(cid: str, clock: float) -> _Session | None:
        found = None
        for s in by_cid_open.get(cid, ()):
            if s.start <= clock and (s.end is None or clock <= s.end):
                found = s
        return found

    for seq, clock, action, agent_id, cause, body in conn.execute(
        "SELECT d.seq, j.clock, d.action, d.agent_id, d.cause, d.body FROM decisions d "
        "JOIN journal j ON j.seq = d.seq ORDER BY d.id"
    ):
        cid = msgspec.json.decode(body)["conversation_id"]
        s = by_seq.get(seq) if cause == "message" else None
        if s is None or s.cid != cid:
            s = session_at(cid, clock)
        if s is None:
            continue
        if s.skill is None:
            s.skill = msgspec.json.decode(body).get("skill")
        if action == "answered":
            s.answered += 1
        elif action == "blocked":
            s.blocked += 1
        elif action == "queued" and s.queued_at is None:
            s.queued_at = clock
        elif action == "assigned" and agent_id:
            if not s.agents or s.agents[-1] != agent_id:
                s.agents.append(agent_id)
            if s.queued_at is not None and s.wait is None:
                s.wait = clock - s.queued_at


def _replies(conn: sqlite3.Connection, sessions: list[_Session]) -> None:
    """Attach each human reply (outbox) to the session it was sent in."""
    by_cid: dict[str, list[_Session]] = defaultdict(list)
    for s in sessions:
        by_cid[s.cid].append(s)
    for cid, ts in conn.execute("SELECT conversation_id, ts FROM outbox WHERE agent_id IS NOT NULL ORDER BY ts, id"):
        found = None
        for s in by_cid.get(cid, ()):
            if s.start <= ts and (s.end is None or ts <= s.end):
                found = s
        if found is not None:
            found.reply_times.append(ts)
    for s in sessions:
        s.measure_replies()


def _orders(conn: sqlite3.Connection) -> dict[tuple[str, str], list[tuple[str, str, float]]]:
    out: dict[tuple[str, str], list[tuple[str, str, float]]] = defaultdict(list)
    for shop_id, order_id, buyer_id, body, updated in conn.execute(
        "SELECT shop_id, order_id, buyer_id, body, updated FROM orders WHERE buyer_id IS NOT NULL"
    ):
        order = _decode_order.decode(body)
        out[(shop_id, buyer_id)].append((order_id, (order.status or "").lower(), updated))
    return out


COLUMNS = [f for f in Row.__struct_fields__]


def to_csv(stats: Stats) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["group", *COLUMNS])
    for group, rows in (("total", [stats.total]), ("shop", stats.by_shop), ("skill", stats.by_skill),
                        ("agent", stats.by_agent)):
        for r in rows:
            w.writerow([group, *("" if v is None else v for v in msgspec.structs.astuple(r))])
    return buf.getvalue()


def parse_period(since: str | None, until: str | None, timezone: str) -> tuple[float | None, float | None]:
    """``--from``/``--to`` (or ``?from=&to=``): epoch seconds, ``YYYY-MM-DD`` (local midnight) or
    an ISO date-time (local unless it names an offset)."""
    tz = ZoneInfo(timezone)

    def one(value: str | None, name: str) -> float | None:
        if value is None or value == "":
            return None
        try:
            return float(value)
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name}: expected YYYY-MM-DD, an ISO date-time or epoch seconds; got {value!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=tz)
        return dt.timestamp()

    a, b = one(since, "from"), one(until, "to")
    if a is not None and b is not None and b <= a:
        raise ValueError("to: must be after from")
    return a, b
