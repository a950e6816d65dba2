"""Buyer records: profiles (客户标签, 备注), notes and each buyer's current order.

They are merged into each new message before it is routed *and journaled*
(:meth:`BuyerRecords.enrich`), so replay does not depend on profiles that changed since. Where
they are written is a *book*: the instance's SQLite file (:class:`SqliteBook`), or PostgreSQL
shared by several instances (:class:`router.service.redis.pg.PgSide`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from adapters import OrderContext
from router.core.models import Buyer, Message, Order
from router.storage import buyer_rows, story

if TYPE_CHECKING:
    from router.storage.store import Store


@dataclass
class Profile:
    tags: list[str] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)


class Book(Protocol):
    """Where profiles and notes are written."""

    async def update_profile(self, shop_id: str, buyer_id: str, current: Profile | None, *, tags: list[str] | None,
                             add_tags: tuple[str, ...], note: dict[str, Any] | None) -> Profile: ...

    async def add_note(self, shop_id: str, cid: str, agent_id: str | None, text: str, ts: float) -> None: ...


class SqliteBook:
    """The instance's own SQLite file. ``notes``: whether notes get rows of their own (the
    conversation view reads them); the Redis backend without PostgreSQL keeps them in profiles only."""

    def __init__(self, store: Store, notes: bool = True) -> None:
        self.store = store
        self.notes = notes

    async def update_profile(self, shop_id: str, buyer_id: str, current: Profile | None, *, tags: list[str] | None,
                             add_tags: tuple[str, ...], note: dict[str, Any] | None) -> Profile:
        current = current or Profile()
        new_tags = list(tags) if tags is not None else list(current.tags)
        for t in add_tags:
            if t not in new_tags:
                new_tags.append(t)
        notes = list(current.notes)
        if note:
            notes.append(note)
            notes = notes[-200:]

        await self.store.call(lambda c: buyer_rows.save_profile(c, shop_id, buyer_id, new_tags, notes))
        return Profile(new_tags, notes)

    async def add_note(self, shop_id: str, cid: str, agent_id: str | None, text: str, ts: float) -> None:
        if not self.notes:
            return
        await self.store.call(lambda c: buyer_rows.add_note(c, shop_id, cid, agent_id, text, ts))


_order = msgspec.json.Decoder(Order)


class BuyerRecords:
    """Profiles and current orders by ``(shop_id, buyer_id)``, kept in memory for enrichment."""

    def __init__(self, book: Book) -> None:
        self.book = book
        self.profiles: dict[tuple[str, str], Profile] = {}
        self.orders: dict[tuple[str, str], Order] = {}
        self.order_buyer: dict[tuple[str, str], str] = {}

    def load(self, profiles: list[tuple], orders: list[tuple]) -> None:
        """What the SQLite file holds (rows of ``profiles`` and of ``orders`` by update time)."""
        for shop_id, buyer_id, tags, notes in profiles:
            self.profiles[(shop_id, buyer_id)] = Profile(json.loads(tags), json.loads(notes))
        for shop_id, order_id, buyer_id, body, _ in orders:
            if buyer_id:
                self.follow_order(shop_id, order_id, buyer_id, body)

    def follow_order(self, shop_id: str, order_id: str, buyer_id: str, body: bytes | str) -> None:
        """A buyer's current order as stored (JSON)."""
        self.order_buyer[(shop_id, order_id)] = buyer_id
        self.orders[(shop_id, buyer_id)] = _order.decode(body)

    def note_order(self, shop_id: str, buyer_id: str, order: Order) -> Order | None:
        """Make ``order`` the buyer's current order, merged into what is known of it when it is the
        same order; returns it if that changed anything (to be written), else ``None``.

        Platform pushes and the orders buyers' messages carry both go through here, so the
        current order live is the one a restart picks (the row written last): a message that
        names the current order again, unchanged, writes nothing."""
        key = (shop_id, buyer_id)
        old = self.orders.get(key)
        if order == old:  # the common case: a buyer's messages keep naming the same order
            return None
        if old is not None and old.order_id == order.order_id:
            order = msgspec.structs.replace(
                old, **{f: getattr(order, f) for f in order.__struct_fields__ if getattr(order, f) not in (None, 0.0)})
            if order == old:
                return None
        self.orders[key] = order
        if order.order_id:
            self.order_buyer[(shop_id, order.order_id)] = buyer_id
        return order

    def enrich(self, msg: Message) -> Message:
        key = (msg.shop_id, msg.buyer_id)
        profile = self.profiles.get(key)
        order = self.orders.get(key)
        if profile is None and order is None:
            return msg
        changes: dict[str, Any] = {}
        if profile is not None and profile.tags:
            buyer = msg.buyer or Buyer()
            tags = tuple(dict.fromkeys((*buyer.tags, *profile.tags)))
            if tags != buyer.tags:
                changes["buyer"] = msgspec.structs.replace(buyer, tags=tags)
        if order is not None:
            if msg.order is None:
                changes["order"] = order
            elif msg.order.order_id == order.order_id and msg.order.status is None and order.status:
                changes["order"] = msgspec.structs.replace(msg.order, status=order.status)
        return msgspec.structs.replace(msg, **changes) if changes else msg

    def orders_of(self, seen: list[tuple[Message, Any, float, str]]) -> list[tuple]:
        """The ``orders`` rows a routed run of messages writes (orders they name that changed);
        ``seen``: ``(message, its own decision, clock, conversation)`` as the consumer keeps them."""
        orders = []
        for m, _, c, _ in seen:
            if m.order is not None and m.order.order_id and (order := self.note_order(m.shop_id, m.buyer_id, m.order)):
                orders.append((m.shop_id, order.order_id, m.buyer_id, story.order_json(order), c))
        return orders

    def apply_context(self, items: list[OrderContext], clock: float) -> tuple[list[tuple], list[tuple[str, Order]]]:
        """Order news from a platform: the ``orders`` rows to write, and the conversations whose
        agent is told (a new current order, or new scans or after-sale news of it)."""
        writes = []
        pushes: list[tuple[str, Order]] = []
        for item in items:
            order = item.order
            buyer = item.buyer_id or (self.order_buyer.get((item.shop_id, order.order_id or "")))
            if buyer is None:
                continue
            noted = self.note_order(item.shop_id, buyer, order)
            if noted is None:  # nothing new about the buyer's current order
                if not (item.logistics or item.aftersale):
                    continue
                # new scans or after-sale news of it: the agent is told, to reread the buyer's story
                pushes.append((f"{item.shop_id}:{buyer}", self.orders.get((item.shop_id, buyer)) or order))
                continue
            if noted.order_id:
                writes.append((item.shop_id, noted.order_id, buyer, story.order_json(noted), clock))
            pushes.append((f"{item.shop_id}:{buyer}", noted))
        return writes, pushes

    async def set_profile(self, shop_id: str, buyer_id: str, *, tags: list[str] | None = None,
                          add_tags: tuple[str, ...] = (), note: str | None = None,
                          author: str | None = None) -> Profile:
        """Set or extend a buyer's tags and add a note; applies to the buyer's next message."""
        key = (shop_id, buyer_id)
        entry = {"text": note, "by": author, "ts": time.time()} if note else None
        profile = await self.book.update_profile(shop_id, buyer_id, self.profiles.get(key), tags=tags,
                                                 add_tags=add_tags, note=entry)
        self.profiles[key] = profile
        return profile

    async def add_note(self, shop_id: str, buyer_id: str, cid: str, agent_id: str | None, text: str,
                       tags: tuple[str, ...] = ()) -> Profile:
        if text:
            await self.book.add_note(shop_id, cid, agent_id, text, time.time())
        return await self.set_profile(shop_id, buyer_id, add_tags=tags, note=text or None, author=agent_id)
