"""The buyer's story: every order a buyer has with a shop, its parcel scans (物流轨迹) and its
after-sale requests (售后), kept from the orders buyers' messages name and the platforms' pushes
(PMC, Doudian), so the agent sees beside the chat what the buyer is asking about, and the 售后
view lists the open requests of the account's shops.

Orders live in the ``orders`` table (written by the journal writer for messages and by
:func:`record` for pushes, both merging into what is stored); scans in ``logistics``, requests in
``aftersales``. Nothing here is journaled: it is what the platforms said, not a routing input.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING

import msgspec
from router.core.models import AfterSale, BuyerOrder, LogisticsEvent, OpenAfterSale, Order

if TYPE_CHECKING:
    from adapters import OrderContext

#: States after which a request is no longer open (leaves the 售后 list).
CLOSED = frozenset({"refunded", "closed", "refused"})
#: Orders and scans the buyer panel shows: the newest first.
ORDERS_SHOWN = 20
SCANS_SHOWN = 20
AFTERSALES_SHOWN = 300

_encode = msgspec.json.Encoder().encode
_order = msgspec.json.Decoder(Order)
_aftersale = msgspec.json.Decoder(AfterSale)


def order_json(order: Order) -> str:
    """The order as stored: only the fields it says something about, since the stored body is
    merged with ``json_patch`` and an ``amount`` of 0.0 or a ``null`` would erase what is known
    (msgspec's ``omit_defaults`` keeps a 0.0 that is not the default's own object)."""
    return _encode({k: v for k, v in msgspec.structs.asdict(order).items() if v is not None and v != 0.0}).decode()


def _merge(old: AfterSale, new: AfterSale) -> AfterSale:
    """A later push moves the state on; an earlier one arriving late does not move it back.
    The kind is the request's from its first push (later ones may not say)."""
    later = (new.updated or 0.0) >= (old.updated or 0.0)
    return msgspec.structs.replace(
        old, state=new.state if later else old.state, amount=new.amount or old.amount,
        reason=new.reason or old.reason, opened=min(t for t in (old.opened, new.opened) if t is not None),
        updated=max(old.updated or 0.0, new.updated or 0.0))


def record(conn: sqlite3.Connection, items: Iterable[OrderContext], now: float) -> None:
    """Keep what pushes said: the order merged into the stored one (its buyer when the push
    names one), its scans (a repeated scan once), the after-sale request merged by its id."""
    for item in items:
        oid = item.order.order_id
        if not oid:
            continue
        shop = item.shop_id
        conn.execute(
            "INSERT INTO orders (shop_id, order_id, buyer_id, body, updated) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(shop_id, order_id) DO UPDATE SET buyer_id = COALESCE(excluded.buyer_id, orders.buyer_id), "
            "body = json_patch(orders.body, excluded.body), updated = excluded.updated",
            (shop, oid, item.buyer_id, order_json(item.order), now))
        if item.logistics:
            conn.executemany("INSERT OR IGNORE INTO logistics (shop_id, order_id, ts, text, status) VALUES (?, ?, ?, ?, ?)",
                             [(shop, oid, e.ts, e.text, e.status) for e in item.logistics])
        a = item.aftersale
        if a is None:
            continue
        a = msgspec.structs.replace(a, opened=a.opened or now, updated=a.updated or now)
        row = conn.execute("SELECT body FROM aftersales WHERE shop_id = ? AND aftersale_id = ?",
                           (shop, a.aftersale_id)).fetchone()
        if row is not None:
            a = _merge(_aftersale.decode(row[0]), a)
        conn.execute(
            "INSERT INTO aftersales (shop_id, aftersale_id, order_id, buyer_id, state, open, body, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(shop_id, aftersale_id) DO UPDATE SET "
            "order_id = excluded.order_id, buyer_id = COALESCE(excluded.buyer_id, aftersales.buyer_id), "
            "state = excluded.state, open = excluded.open, body = excluded.body, updated = excluded.updated",
            (shop, a.aftersale_id, oid, item.buyer_id, a.state, int(a.state not in CLOSED), _encode(a).decode(),
             a.updated))


def buyer_orders(conn: sqlite3.Connection, shop_id: str, buyer_id: str) -> list[BuyerOrder]:
    """The buyer's orders at the shop, the most recently changed first, each with its newest
    scans and its after-sale requests."""
    rows = conn.execute(
        "SELECT order_id, body, updated FROM orders WHERE shop_id = ? AND (buyer_id = ? OR order_id IN "
        "(SELECT order_id FROM aftersales WHERE shop_id = ? AND buyer_id = ?)) ORDER BY updated DESC LIMIT ?",
        (shop_id, buyer_id, shop_id, buyer_id, ORDERS_SHOWN)).fetchall()
    out = []
    for order_id, body, updated in rows:
        scans = tuple(LogisticsEvent(ts, text, status) for ts, text, status in conn.execute(
            "SELECT ts, text, status FROM logistics WHERE shop_id = ? AND order_id = ? ORDER BY ts DESC LIMIT ?",
            (shop_id, order_id, SCANS_SHOWN)))
        requests = tuple(_aftersale.decode(b) for (b,) in conn.execute(
            "SELECT body FROM aftersales WHERE shop_id = ? AND order_id = ? ORDER BY updated DESC", (shop_id, order_id)))
        out.append(BuyerOrder(shop_id, _order.decode(body), updated, scans, requests))
    return out


def open_aftersales(conn: sqlite3.Connection, shops: Iterable[str], limit: int = AFTERSALES_SHOWN) -> list[OpenAfterSale]:
    """Open after-sale requests of ``shops``, the most recently changed first."""
    shops = list(shops)
    if not shops:
        return []
    marks = ",".join("?" * len(shops))
    rows = conn.execute(
        "SELECT a.shop_id, a.order_id, COALESCE(a.buyer_id, o.buyer_id), a.body, o.body FROM aftersales a "
        "LEFT JOIN orders o ON o.shop_id = a.shop_id AND o.order_id = a.order_id "
        f"WHERE a.open = 1 AND a.shop_id IN ({marks}) ORDER BY a.updated DESC LIMIT ?", (*shops, limit)).fetchall()
    return [OpenAfterSale(shop, buyer, f"{shop}:{buyer}" if buyer else None, _aftersale.decode(a),
                          _order.decode(o) if o else Order(order_id=oid))
            for shop, oid, buyer, a, o in rows]
