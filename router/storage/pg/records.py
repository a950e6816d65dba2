"""The records in PostgreSQL (psycopg 3, async, with its pool): one system of record for every
instance of a deployment.

- **Accounts** are read by every instance's account book (every 0.5 s, one query), so an
  account created once logs in everywhere and a password change or a disable closes its sockets
  on every instance within a second.
- **History**: each routed input (a message or an agent's request: its shard stream entry) is a
  row keyed by the entry, written *before* the Redis commit that acknowledges it and replaced,
  never added to, when the owner that takes the shard over routes it again. Nothing
  acknowledged is missing, nothing is counted twice. Rows are fenced by the shard's lease epoch.
  Timer decisions (ticks) have no entry: they are copied from the commit's ``ticks`` stream
  (router/service/redis/ticks.py).
- **Outbox**: a reply is a row; every instance's sender claims due rows with ``FOR UPDATE SKIP
  LOCKED`` and a lease (``claimed_until``), so a row is sent by one instance at a time, and
  taken over by another when its sender dies before acknowledging it. A row taken over that way
  (or whose last attempt timed out) is *in doubt*: the platform is asked before it is sent again.
- **Statistics** read these tables through the one implementation of the figures
  (:func:`router.storage.stats.compute_rows`), so ``/v1/stats`` and ``fenliu stats`` agree everywhere.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Collection, Container, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import psycopg
import structlog
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from router.storage import accounts as acct
from router.storage.accounts import Account
from router.core.i18n import Text
from router.core.models import BuyerOrder, Decision, LogisticsEvent, Message, OpenAfterSale, Order, WsHistoryItem
from router.storage.pg import schema
from router.storage.pg.outbox import PgOutbox
from router.storage.records import Records

if TYPE_CHECKING:
    from adapters import OrderContext
    from router.core.config import Config
    from router.storage.figures import Stats

log = structlog.get_logger("fenliu.pg")

_encode = msgspec.json.Encoder().encode
_decisions = msgspec.json.Decoder(list[Decision])
_message = msgspec.json.Decoder(Message)
_COLS = acct._COLS


_T = TypeVar("_T")


def _answers_503(fn: Callable[..., Awaitable[_T]]) -> Callable[..., Awaitable[_T]]:
    """A read a person waits for (a page, ``/v1/stats``): PostgreSQL unreachable is ``503``
    with a reason, not a traceback."""
    @functools.wraps(fn)
    async def read(*args: Any, **kw: Any) -> _T:
        try:
            return await fn(*args, **kw)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            from router.core.errors import HTTPError
            from router.core.i18n import _

            log.warning("records_unavailable", read=fn.__name__, error=str(exc))
            raise HTTPError(503, _("the records database cannot be read; retry later"), "unavailable",
                            {"Retry-After": "1"}) from exc
    return read


#: How long the live figures' start-up read waits for the first follow (PostgreSQL away: they
#: start from what is fed later).
FIGURES_WAIT_S = 15.0


class PgRecords(Records):
    """The records of every instance sharing ``url``."""

    shared = True

    def __init__(self, url: str, *, instance: str, pool_size: int = 8) -> None:
        self.url = url
        self.instance = instance
        self.pool = AsyncConnectionPool(url, min_size=1, max_size=pool_size, open=False, timeout=5,
                                        kwargs={"autocommit": True, "connect_timeout": 5})
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Round trips to PostgreSQL, by purpose; ``on_round_trip(what, n)`` also gets them (the
        #: service's ``fenliu_pg_round_trips`` in /metrics, which bench/bench_records.py reads).
        self.round_trips: dict[str, int] = {}
        self.on_round_trip: Callable[[str, int], None] | None = None
        #: Set once the service's follower (router/service/redis/pg.py) has fed the live figures every
        #: instance's rows of the last day: :meth:`figure_rows` waits for it.
        self.followed = asyncio.Event()
        self.outbox = PgOutbox(self.pool, instance, self._rt)

    def _rt(self, what: str, n: int = 1) -> None:
        self.round_trips[what] = self.round_trips.get(what, 0) + n
        if self.on_round_trip is not None:
            self.on_round_trip(what, n)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

        def migrate() -> None:
            with psycopg.connect(self.url, connect_timeout=5) as conn:
                schema.upgrade(conn, instance=self.instance)

        await asyncio.to_thread(migrate)
        await self.pool.open(wait=True, timeout=10)

    async def close(self) -> None:
        await self.pool.close()

    # -- accounts ---------------------------------------------------------------------------------

    async def accounts(self) -> dict[str, Account]:
        async with self.pool.connection() as conn:
            self._rt("accounts")
            cur = await conn.execute(f"SELECT {_COLS} FROM accounts")
            return {a.name: a for a in map(acct._row, await cur.fetchall())}

    async def lookup(self, name: str) -> tuple[Account, str] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"SELECT {_COLS}, password_hash FROM accounts WHERE name = %s", (name,))
            row = await cur.fetchone()
        return (acct._row(row[:-1]), row[-1]) if row else None

    def lookup_blocking(self, name: str) -> tuple[Account, str] | None:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self.lookup(name), self._loop).result(10)

    async def rehash(self, name: str, old_hash: str, new: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("UPDATE accounts SET password_hash = %s WHERE name = %s AND password_hash = %s",
                               (new, name, old_hash))

    # -- buyer profiles and notes ---------------------------------------------------------------

    async def update_profile(self, shop_id: str, buyer_id: str, *, tags: list[str] | None, add_tags: Sequence[str],
                             note: dict[str, Any] | None) -> tuple[list[str], list[dict[str, Any]]]:
        """Set or extend the buyer's tags and append a note in one transaction (the row locked),
        so notes written through two instances at once are both kept."""
        async with self.pool.connection() as conn, conn.transaction():
            self._rt("profile", 3)
            # the row first, so that there is one to lock even for the buyer's first note
            await conn.execute("INSERT INTO profiles (shop_id, buyer_id, updated) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                               (shop_id, buyer_id, time.time()))
            cur = await conn.execute("SELECT tags, notes FROM profiles WHERE shop_id = %s AND buyer_id = %s FOR UPDATE",
                                     (shop_id, buyer_id))
            row = await cur.fetchone()
            old_tags, notes = (list(row[0]), list(row[1])) if row else ([], [])
            new_tags = list(tags) if tags is not None else old_tags
            for t in add_tags:
                if t not in new_tags:
                    new_tags.append(t)
            if note is not None:
                notes = [*notes, note][-200:]
            await conn.execute("UPDATE profiles SET tags = %s, notes = %s, updated = %s WHERE shop_id = %s AND buyer_id = %s",
                               (Jsonb(new_tags), Jsonb(notes), time.time(), shop_id, buyer_id))
        return new_tags, notes

    async def profiles_since(self, updated: float) -> list[tuple[str, str, list[str], list[dict[str, Any]], float]]:
        """Profiles changed at or after ``updated`` (every instance's enrichment cache follows them)."""
        async with self.pool.connection() as conn:
            self._rt("profile")
            cur = await conn.execute("SELECT shop_id, buyer_id, tags, notes, updated FROM profiles WHERE updated >= %s",
                                     (updated,))
            return [(s, b, list(t), list(n), u) for s, b, t, n, u in await cur.fetchall()]

    async def orders_since(self, updated: float) -> list[tuple[str, str, str, str, float]]:
        """Orders with a buyer changed at or after ``updated``: ``(shop, order, buyer, body, updated)``."""
        async with self.pool.connection() as conn:
            self._rt("orders")
            cur = await conn.execute("SELECT shop_id, order_id, buyer_id, body::text, updated FROM orders "
                                     "WHERE buyer_id IS NOT NULL AND updated >= %s ORDER BY updated", (updated,))
            return await cur.fetchall()

    async def add_note(self, shop_id: str, conversation_id: str, agent_id: str | None, text: str, ts: float) -> None:
        async with self.pool.connection() as conn:
            self._rt("note")
            await conn.execute("INSERT INTO notes (shop_id, conversation_id, agent_id, text, ts) VALUES (%s, %s, %s, %s, %s)",
                               (shop_id, conversation_id, agent_id, text, ts))

    # -- orders and the buyer's story ---------------------------------------------------------------

    async def save_orders(self, rows: Iterable[tuple[str, str, str | None, str, float]]) -> None:
        """Orders ``(shop, order, buyer, body JSON, updated)`` merged into what is stored (the
        fields given win, the others stay: ``jsonb ||``, SQLite's ``json_patch``)."""
        rows = list(rows)
        if not rows:
            return
        async with self.pool.connection() as conn:
            self._rt("orders")
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO orders (shop_id, order_id, buyer_id, body, updated) VALUES (%s, %s, %s, %s::jsonb, %s) "
                    "ON CONFLICT (shop_id, order_id) DO UPDATE SET buyer_id = COALESCE(excluded.buyer_id, orders.buyer_id), "
                    "body = orders.body || excluded.body, updated = excluded.updated", rows)

    async def record_story(self, items: Iterable[OrderContext], now: float) -> None:
        """What platform pushes said (router/storage/story.py's ``record``): orders, scans, after-sale requests."""
        from router.storage.story import CLOSED, _aftersale, _merge, order_json

        async with self.pool.connection() as conn, conn.transaction():
            self._rt("orders")
            for item in items:
                oid = item.order.order_id
                if not oid:
                    continue
                shop = item.shop_id
                await conn.execute(
                    "INSERT INTO orders (shop_id, order_id, buyer_id, body, updated) VALUES (%s, %s, %s, %s::jsonb, %s) "
                    "ON CONFLICT (shop_id, order_id) DO UPDATE SET buyer_id = COALESCE(excluded.buyer_id, orders.buyer_id), "
                    "body = orders.body || excluded.body, updated = excluded.updated",
                    (shop, oid, item.buyer_id, order_json(item.order), now))
                for e in item.logistics or ():
                    await conn.execute("INSERT INTO logistics (shop_id, order_id, ts, text, status) VALUES (%s, %s, %s, %s, %s) "
                                       "ON CONFLICT DO NOTHING", (shop, oid, e.ts, e.text, e.status))
                a = item.aftersale
                if a is None:
                    continue
                a = msgspec.structs.replace(a, opened=a.opened or now, updated=a.updated or now)
                cur = await conn.execute("SELECT body::text FROM aftersales WHERE shop_id = %s AND aftersale_id = %s "
                                         "FOR UPDATE", (shop, a.aftersale_id))
                row = await cur.fetchone()
                if row is not None:
                    a = _merge(_aftersale.decode(row[0]), a)
                await conn.execute(
                    "INSERT INTO aftersales (shop_id, aftersale_id, order_id, buyer_id, state, open, body, updated) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s) ON CONFLICT (shop_id, aftersale_id) DO UPDATE SET "
                    "order_id = excluded.order_id, buyer_id = COALESCE(excluded.buyer_id, aftersales.buyer_id), "
                    "state = excluded.state, open = excluded.open, body = excluded.body, updated = excluded.updated",
                    (shop, a.aftersale_id, oid, item.buyer_id, a.state, a.state not in CLOSED, _encode(a).decode(), a.updated))

    @_answers_503
    async def buyer_orders(self, shop_id: str, buyer_id: str) -> list[BuyerOrder]:
        """router/storage/story.py's ``buyer_orders`` over the shared tables (the same queries)."""
        from router.storage.story import ORDERS_SHOWN, SCANS_SHOWN, _aftersale, _order

        async with self.pool.connection() as conn:
            self._rt("story")
            cur = await conn.execute(
                "SELECT order_id, body::text, updated FROM orders WHERE shop_id = %s AND (buyer_id = %s OR order_id IN "
                "(SELECT order_id FROM aftersales WHERE shop_id = %s AND buyer_id = %s)) ORDER BY updated DESC LIMIT %s",
                (shop_id, buyer_id, shop_id, buyer_id, ORDERS_SHOWN))
            out = []
            for order_id, body, updated in await cur.fetchall():
                scans = await conn.execute("SELECT ts, text, status FROM logistics WHERE shop_id = %s AND order_id = %s "
                                           "ORDER BY ts DESC LIMIT %s", (shop_id, order_id, SCANS_SHOWN))
                requests = await conn.execute("SELECT body::text FROM aftersales WHERE shop_id = %s AND order_id = %s "
                                              "ORDER BY updated DESC", (shop_id, order_id))
                out.append(BuyerOrder(shop_id, _order.decode(body), updated,
                                      tuple(LogisticsEvent(*row) for row in await scans.fetchall()),
                                      tuple(_aftersale.decode(b) for (b,) in await requests.fetchall())))
        return out

    @_answers_503
    async def open_aftersales(self, shops: Iterable[str]) -> list[OpenAfterSale]:
        from router.storage.story import AFTERSALES_SHOWN, _aftersale, _order

        shops = list(shops)
        if not shops:
            return []
        async with self.pool.connection() as conn:
            self._rt("story")
            cur = await conn.execute(
                "SELECT a.shop_id, a.order_id, COALESCE(a.buyer_id, o.buyer_id), a.body::text, o.body::text FROM aftersales a "
                "LEFT JOIN orders o ON o.shop_id = a.shop_id AND o.order_id = a.order_id "
                "WHERE a.open AND a.shop_id = ANY(%s) ORDER BY a.updated DESC LIMIT %s", (shops, AFTERSALES_SHOWN))
            rows = await cur.fetchall()
        return [OpenAfterSale(shop, buyer, f"{shop}:{buyer}" if buyer else None, _aftersale.decode(a),
                              _order.decode(o) if o else Order(order_id=oid)) for shop, oid, buyer, a, o in rows]

    # -- history ------------------------------------------------------------------------------------

    async def write_history(self, rows: list[tuple]) -> None:
        """Rows ``(kind, entry, clock, shop, msg_id, conversation, body, decisions, fence)``; a row
        whose entry is already stored is replaced (the same input routed again after a takeover)
        unless it was written under a higher ``fence`` (the shard's lease epoch): an owner that
        lost its shard without knowing it yet cannot overwrite what the new owner decided."""
        if not rows:
            return
        params = [(entry, kind, clock, shop, msg_id, cid, body, _encode(decisions).decode(), self.instance, fence)
                  for kind, entry, clock, shop, msg_id, cid, body, decisions, fence in rows]
        async with self.pool.connection() as conn:
            self._rt("history")
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO history (entry, kind, clock, shop_id, msg_id, conversation_id, body, decisions, instance, fence) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s) ON CONFLICT (entry) DO UPDATE SET "
                    "kind = excluded.kind, clock = excluded.clock, decisions = excluded.decisions, "
                    "instance = excluded.instance, fence = excluded.fence WHERE history.fence <= excluded.fence", params)

    @_answers_503
    async def conversation(self, conversation_id: str, since: float, limit: int = 50
                           ) -> tuple[list[WsHistoryItem], list[dict[str, Any]]]:
        """The conversation's last ``limit`` messages, bot answers and agents' replies since
        ``since`` (its opening), oldest first, and its notes — as every instance shows them."""
        async with self.pool.connection() as conn:
            self._rt("conversation")
            cur = await conn.execute(
                "(SELECT 0, clock, body, decisions, NULL, NULL FROM history WHERE conversation_id = %s AND kind = 'message' "
                " AND clock >= %s ORDER BY clock DESC LIMIT %s) UNION ALL "
                "(SELECT 1, ts, NULL, NULL, agent_id, text FROM outbox WHERE conversation_id = %s AND ts >= %s "
                " ORDER BY ts DESC LIMIT %s)", (conversation_id, since, limit, conversation_id, since, limit))
            rows = await cur.fetchall()
            cur = await conn.execute("SELECT agent_id, text, ts FROM notes WHERE conversation_id = %s AND ts >= %s "
                                     "ORDER BY ts", (conversation_id, since))
            notes = [{"by": a, "text": t, "ts": ts} for a, t, ts in await cur.fetchall()]
        return _items(rows, limit), notes

    async def histories(self, opened: dict[str, float], *, skip_entries: Collection[str] = (),
                        skip_replies: Collection[tuple[str, float]] = (), limit: int = 50) -> dict[str, list[WsHistoryItem]]:
        """:meth:`conversation`'s history of many conversations (id → opened at) in two queries:
        what a new owner of a shard loads, so its ``assigned`` frames carry what the old owner
        remembered. ``skip_entries`` (history keys) and ``skip_replies`` (conversation, ts) are
        inputs the new owner routes again itself (left pending by the old one), not to be counted twice."""
        if not opened:
            return {}
        cids, since = list(opened), [opened[c] for c in opened]
        async with self.pool.connection() as conn:
            self._rt("conversation")
            cur = await conn.execute(
                "SELECT o.cid, 0, h.clock, h.body, h.decisions, NULL, NULL FROM unnest(%s::text[], %s::float8[]) AS o(cid, since) "
                "CROSS JOIN LATERAL (SELECT clock, body, decisions FROM history WHERE conversation_id = o.cid "
                " AND kind = 'message' AND clock >= o.since AND entry <> ALL(%s::text[]) ORDER BY clock DESC LIMIT %s) h "
                "UNION ALL "
                "SELECT o.cid, 1, b.ts, NULL, NULL, b.agent_id, b.text FROM unnest(%s::text[], %s::float8[]) AS o(cid, since) "
                "CROSS JOIN LATERAL (SELECT ts, agent_id, text FROM outbox WHERE conversation_id = o.cid AND ts >= o.since "
                " ORDER BY ts DESC LIMIT %s) b", (cids, since, list(skip_entries), limit, cids, since, limit))
            rows = await cur.fetchall()
        by: dict[str, list[tuple]] = {}
        for cid, *row in rows:
            if row[0] == 1 and (cid, row[1]) in skip_replies:
                continue
            by.setdefault(cid, []).append(tuple(row))
        return {cid: _items(found, limit) for cid, found in by.items()}

    async def add_violations(self, rows: list[tuple]) -> None:
        async with self.pool.connection() as conn:
            self._rt("violations")
            async with conn.cursor() as cur:
                await cur.executemany("INSERT INTO violations (ts, shop_id, conversation_id, agent_id, word, tag, source) "
                                      "VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)

    # -- statistics and retention ---------------------------------------------------------------------

    async def read_rows(self, since: float | None, until: float | None) -> tuple[list[tuple], list[tuple], list[tuple]]:
        """The history rows and replies of ``[since, until)`` in :func:`router.storage.figures.read_rows`'s
        form and order (by clock; at an equal clock the input first), the orders and the
        violations — in one repeatable-read transaction, so the tables agree."""
        lo = since if since is not None else float("-inf")
        hi = until if until is not None else float("inf")
        async with self.pool.connection() as conn:
            self._rt("stats")
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur = await conn.execute(
                    "SELECT kind, id, clock, shop_id, msg_id, conversation_id, body, decisions::text FROM history "
                    "WHERE clock >= %s AND clock < %s", (lo, hi))
                history = await cur.fetchall()
                cur = await conn.execute(
                    "SELECT id, shop_id, conversation_id, buyer_id, agent_id, text, ts FROM outbox WHERE ts >= %s AND ts < %s",
                    (lo, hi))
                replies = await cur.fetchall()
                cur = await conn.execute("SELECT shop_id, order_id, buyer_id, body::text, updated FROM orders "
                                         "WHERE buyer_id IS NOT NULL")
                orders = await cur.fetchall()
                cur = await conn.execute("SELECT shop_id, agent_id, tag, word FROM violations WHERE ts >= %s AND ts < %s",
                                         (lo, hi))
                found = await cur.fetchall()
        events: list[tuple[float, int, int, tuple]] = []
        for kind, hid, clock, shop, msg_id, cid, body, decisions in history:
            events.append((clock, 0, hid, (kind, hid, clock, shop, msg_id, cid, bytes(body) if body is not None else None,
                                          _decisions.decode(decisions))))
        for rid, shop, cid, buyer, agent, text, ts in replies:
            events.append((ts, 1, rid, ("reply", shop, cid, buyer, agent, text, ts)))
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        return [e[3] for e in events], orders, found

    async def figure_rows(self, since: float, until: float) -> tuple[list[tuple], int, int]:
        """Nothing to read here: the follower's first read (a day back, every instance's rows)
        reaches the live figures through ``on_journaled`` while they wait (all of it folded:
        seq and outbox id 0). Reading the rows here too would count them twice."""
        await asyncio.wait_for(self.followed.wait(), FIGURES_WAIT_S)
        return [], 0, 0

    async def rows_after(self, history_id: int, outbox_id: int, since: float, skip: tuple[Container[int], Container[int]]
                         ) -> tuple[list[tuple], list[tuple]]:
        """History rows with an id above ``history_id`` and replies above ``outbox_id``, both
        from ``since`` on and not in ``skip`` (ids already read), in :func:`read_rows`'s form (a
        row's second field is its id): what the live figures fold next. The ids first, then only
        the rows not read yet (the overlap the caller asks for costs ids, not bodies)."""
        async with self.pool.connection() as conn:
            self._rt("follow", 2)
            cur = await conn.execute("SELECT id FROM history WHERE id > %s AND clock >= %s", (history_id, since))
            want = [i for (i,) in await cur.fetchall() if i not in skip[0]]
            cur = await conn.execute(
                "SELECT kind, id, clock, shop_id, msg_id, conversation_id, body, decisions::text FROM history "
                "WHERE id = ANY(%s) ORDER BY id", (want,))
            history = [(k, i, c, s, m, cid, bytes(b) if b is not None else None, _decisions.decode(d))
                       for k, i, c, s, m, cid, b, d in await cur.fetchall()]
            cur = await conn.execute(
                "SELECT id, shop_id, conversation_id, buyer_id, agent_id, text, ts FROM outbox WHERE id > %s AND ts >= %s "
                "ORDER BY id", (outbox_id, since))
            replies = [r for r in await cur.fetchall() if r[0] not in skip[1]]
        return history, replies

    @_answers_503
    async def stats(self, config: Config, **period: Any) -> Stats:
        from router.storage.stats import compute_rows

        rows, orders, found = await self.read_rows(period.get("since"), period.get("until"))
        return compute_rows(config, rows, orders, found, **period)

    async def prune(self, days: float, now: float | None = None) -> dict[str, int]:
        """Delete history, acknowledged replies, notes and violations older than ``days``
        (``storage.history_days``); 0 keeps everything."""
        if days <= 0:
            return {}
        cutoff = (now if now is not None else time.time()) - days * 86400
        out = {}
        async with self.pool.connection() as conn:
            for table, where in (("history", "clock < %s"), ("outbox", "acked IS NOT NULL AND ts < %s"),
                                 ("notes", "ts < %s"), ("violations", "ts < %s")):
                cur = await conn.execute(f"DELETE FROM {table} WHERE {where}", (cutoff,))
                out[table] = cur.rowcount
        if any(out.values()):
            log.info("history_pruned", days=days, **out)
        return out



def read_stats(config: Config, **period: Any) -> Stats:
    """``fenliu stats`` over the shared records: the same figures as every instance's ``/v1/stats``."""
    from router.storage.pg import NO_DATABASE, database_url

    url = database_url(config.main.storage)
    if not url:
        raise ValueError(NO_DATABASE)

    async def run() -> Stats:
        records = PgRecords(url, instance="fenliu-stats", pool_size=1)
        await records.start()
        try:
            return await records.stats(config, **period)
        finally:
            await records.close()

    return asyncio.run(run())


def open_records(config: Config) -> Any:
    """The shared records for a command-line tool (``fenliu accounts``, ``fenliu faq mine``): a
    :class:`router.storage.pg.compat.SyncStore`, or ``None`` after printing why the database cannot
    be opened."""
    import sys

    from router.core import i18n
    from router.storage.pg.compat import SyncStore

    try:
        return SyncStore.from_config(config)
    except (psycopg.Error, RuntimeError, ValueError) as exc:
        print(i18n.t(i18n._("error: {reason}", reason=reason(exc))), file=sys.stderr)
        return None


def reason(exc: BaseException) -> str:
    """An error's words for a person: ours are catalogue texts (translated when printed), the
    driver's are PostgreSQL's own."""
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, Text) else str(exc).strip()


def _items(rows: list[tuple], limit: int) -> list[WsHistoryItem]:
    """History rows ``(source, ts, body, decisions, agent_id, text)`` (source 0: a routed message,
    1: an agent's reply) as the last ``limit`` items an ``assigned`` frame carries, oldest first."""
    items: list[WsHistoryItem] = []
    for source, ts, body, decisions, agent_id, text in rows:
        if source == 1:
            items.append(WsHistoryItem("agent", text, ts, agent_id=agent_id))
            continue
        msg = _message.decode(body)
        own = next((d for d in msgspec.convert(decisions, list[Decision]) if d.msg_id == msg.msg_id), None)
        if own is not None and own.action == "blocked":
            continue
        items.append(WsHistoryItem("buyer", own.text if own is not None and own.text is not None else msg.text,
                                   msg.ts or ts, msg_id=msg.msg_id, kind=msg.kind))
        if own is not None and own.reply:
            items.append(WsHistoryItem("bot", own.reply, ts))
    items.sort(key=lambda h: h.ts)
    return items[-limit:]
