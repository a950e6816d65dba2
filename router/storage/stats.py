"""Service statistics for any period, from the store: the figures agents and shops are judged by.

The figures themselves are :mod:`router.storage.figures`'s, the one implementation the dashboard and the
workbench's status bar use too: this module reads the period's rows back from the store
(:func:`router.storage.figures.read_rows`), folds them through the same :class:`~router.storage.figures.Ledger`,
and adds what only a period report has: inquiry-to-order conversion (询单转化率), from the order
table — sessions after which the buyer had an order at that shop, paid or further, updated within
``conversion_window_h`` of the session's start, not counting orders the buyer asked about in the
session (those existed before it). Definitions: docs/stats.md.
"""

from __future__ import annotations

import csv
import io
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec

from router.core.config import Config
from router.storage.figures import QUEUE, Cell, Ledger, Row, Stats, Violations, read_rows
from router.core.i18n import _
from router.core.models import Order

__all__ = ["COLUMNS", "Row", "Stats", "compute", "parse_period", "to_csv"]

_decode_order = msgspec.json.Decoder(Order)
_PAID = {"paid", "shipped", "delivered", "completed", "finished", "signed"}


def compute(conn: sqlite3.Connection, config: Config, *, since: float | None = None, until: float | None = None,
            shop: str | None = None, agent: str | None = None, shops: Iterable[str] | None = None,
            conversion_window_h: float = 24.0, now: float | None = None) -> Stats:
    """The figures of ``[since, until)`` at ``now`` (default: the service's clock rule, the later
    of the wall clock and the last entry read, never past ``until``), optionally for one shop or
    only what is charged to one agent, restricted to ``shops`` (an account's) when given."""
    rows, _, _ = read_rows(conn, since, until)
    try:
        found = conn.execute("SELECT shop_id, agent_id, tag, word FROM violations WHERE ts >= ? AND ts < ?",
                             (since if since is not None else float("-inf"),
                              until if until is not None else float("inf"))).fetchall()
    except sqlite3.OperationalError:  # a store from before the table
        found = []
    orders = conn.execute("SELECT shop_id, order_id, buyer_id, body, updated FROM orders WHERE buyer_id IS NOT NULL")
    return compute_rows(config, rows, orders, found, since=since, until=until, shop=shop, agent=agent, shops=shops,
                        conversion_window_h=conversion_window_h, now=now)


def compute_rows(config: Config, rows: list[tuple], orders: Iterable[tuple], found: Iterable[tuple], *,
                 since: float | None = None, until: float | None = None, shop: str | None = None,
                 agent: str | None = None, shops: Iterable[str] | None = None, conversion_window_h: float = 24.0,
                 now: float | None = None) -> Stats:
    """:func:`compute` over rows read from any records store: the journal rows and replies
    (:func:`router.storage.figures.read_rows`'s), the orders ``(shop, order, buyer, body, updated)`` and
    the violations ``(shop, agent, tag, word)`` of the period."""
    ledger = Ledger(config, since, until, keep_sessions=True)
    ledger.apply(rows)
    if now is None:
        now = max(time.time(), ledger.last_clock)
    if until is not None:
        now = min(now, until)
    by_buyer = _orders(orders)

    def convert(cells) -> None:
        for s in ledger.sessions():
            if s.blocked == s.messages:
                continue
            for order_id, status, updated in by_buyer.get((s.shop, s.buyer), ()):
                if (status in _PAID and order_id not in s.orders_asked
                        and s.start <= updated <= s.start + conversion_window_h * 3600):
                    key = (s.shop, s.last_agent or QUEUE, s.key_skill)  # once, to whoever served last
                    cells.setdefault(key, Cell()).converted += 1
                    break

    stats = ledger.stats(now, shops=shops, shop=shop, agent=agent, extra=convert, conversion=True)
    stats.violations = count_violations(found, shops=shops, shop=shop, agent=agent)
    return stats


def violations(conn: sqlite3.Connection, since: float | None, until: float | None, *,
               shops: Iterable[str] | None = None, shop: str | None = None, agent: str | None = None) -> list[Violations]:
    """Forbidden words in refused replies of ``[since, until)``, per agent and category, most first."""
    try:
        rows = conn.execute("SELECT shop_id, agent_id, tag, word FROM violations WHERE ts >= ? AND ts < ?",
                            (since if since is not None else float("-inf"), until if until is not None else float("inf")))
    except sqlite3.OperationalError:  # a store from before the table
        return []
    return count_violations(rows, shops=shops, shop=shop, agent=agent)


def count_violations(rows: Iterable[tuple], *, shops: Iterable[str] | None = None, shop: str | None = None,
                     agent: str | None = None) -> list[Violations]:
    """:func:`violations` of rows ``(shop, agent, tag, word)`` already read."""
    allowed = set(shops) if shops is not None else None
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for shop_id, agent_id, tag, word in rows:
        if (allowed is not None and shop_id not in allowed) or (shop and shop_id != shop) or (agent and agent_id != agent):
            continue
        words = counts.setdefault((agent_id or "", tag), {})
        words[word] = words.get(word, 0) + 1
    out = [Violations(a, tag, sum(w.values()), [x for x, _ in sorted(w.items(), key=lambda i: (-i[1], i[0]))[:5]])
           for (a, tag), w in counts.items()]
    out.sort(key=lambda v: (-v.hits, v.agent_id, v.tag))
    return out


def _orders(rows: Iterable[tuple]) -> dict[tuple[str, str], list[tuple[str, str, float]]]:
    out: dict[tuple[str, str], list[tuple[str, str, float]]] = defaultdict(list)
    for shop_id, order_id, buyer_id, body, updated in rows:
        order = _decode_order.decode(body)
        out[(shop_id, buyer_id)].append((order_id, (order.status or "").lower(), updated))
    return out


COLUMNS = [f for f in Row.__struct_fields__]


def to_csv(stats: Stats) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["group", *COLUMNS])
    for group, rows in (("total", [stats.total]), ("shop", stats.by_shop), ("skill", stats.by_skill),
                        ("agent", stats.by_agent), ("queue", [stats.queue] if stats.queue else [])):
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
            raise ValueError(_("{name}: expected YYYY-MM-DD, an ISO date-time or epoch seconds; got {value!r}",
                               name=name, value=value)) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=tz)
        return dt.timestamp()

    a, b = one(since, "from"), one(until, "to")
    if a is not None and b is not None and b <= a:
        raise ValueError(_("to: must be after from"))
    return a, b
