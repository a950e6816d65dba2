"""What a Redis-backed instance does with the PostgreSQL records store
(``storage.records = "postgres"``): the hooks :class:`router.service.redis.service.RedisService` calls,
kept here so the routing service only says *when* (docs/deploy.md, "PostgreSQL").

- **History before acknowledgement.** Every message and agent request routed in a batch is
  written (keyed by what it is, so routing it again replaces the row) before ``commit.lua``
  acknowledges the batch; a failed write fails the batch like a Redis error (its entries stay
  pending and are routed again). Each row carries its shard's lease epoch, and PostgreSQL keeps
  the row of the highest epoch: an owner that lost the shard cannot overwrite the new owner's.
- **Timer decisions** (ticks) are explained by no input, so they cannot be written before the
  commit (a commit that is then fenced would leave decisions that never happened). The commit
  adds them to the ``ticks`` stream, atomically with everything else, and every instance copies
  that stream to PostgreSQL (:class:`router.service.redis.ticks.TickCopier`).
- **Replies** are outbox rows; every instance runs a sender that claims due rows with
  ``FOR UPDATE SKIP LOCKED`` (:meth:`router.storage.pg.outbox.PgOutbox.claim_due`), so the reply an
  agent wrote through one instance is sent once, by whichever instance claims it first (the
  writer nudges its own sender, so usually itself, at once).
- **Profiles** are read-modify-written in one transaction; each instance follows the changed
  rows every second for the tags it adds to new messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter

from adapters import OutboundReply
from router.core.models import Conversation, Decision, Message, Order, WsHistoryItem
from router.service.buyers import Profile
from router.service.outbox import attempt
from router.service.redis.ticks import TickCopier, entry as tick_entry
from router.storage.pg.records import PgRecords
from router.storage.story import order_json

if TYPE_CHECKING:
    from router.service.redis.service import RedisService

log = structlog.get_logger("fenliu.pg")

_encode = msgspec.json.Encoder().encode
_order = msgspec.json.Decoder(Order)
_conversation = msgspec.json.Decoder(Conversation)


#: How often the sender looks for due replies when nothing nudged it.
OUTBOX_POLL_S = 0.25
#: How often profiles changed elsewhere are read.
PROFILES_S = 1.0
#: How often history past ``storage.history_days`` is pruned.
PRUNE_S = 3600.0
#: How far back in ids each read of new history goes again (rows committed out of id order).
FOLLOW_OVERLAP = 2000


class PgSide:
    """The PostgreSQL half of one Redis-backed instance; also the book its buyers' profiles and
    notes are written to (:class:`router.service.buyers.Book`)."""

    def __init__(self, service: RedisService, records: PgRecords) -> None:
        self.service = service
        self.records = records
        self.rows: list[tuple] = []
        self.orders: list[tuple[str, str, str | None, str, float]] = []
        self._nudge = asyncio.Event()
        self.ticks_copier = TickCopier(service.link.r, service.keys.ticks, service.link.id, records)
        self._sending: set[int] = set()
        self._profiles_seen = self._orders_seen = 0.0
        self._history_last = self._outbox_last = 0
        self._history_seen: dict[int, None] = {}
        self._outbox_seen: dict[int, None] = {}

    def count_on(self, registry: CollectorRegistry) -> None:
        """Count round trips in the service's metrics."""
        trips = Counter("fenliu_pg_round_trips", "Round trips to PostgreSQL, by purpose", ["op"], registry=registry)
        self.records.on_round_trip = lambda op, n: trips.labels(op).inc(n)

    # -- start and stop ---------------------------------------------------------------------------

    async def start(self) -> list[asyncio.Task]:
        """Migrate, load what enrichment reads (profiles, current orders), start the loops."""
        await self.records.start()
        s = self.service
        for shop, buyer, tags, notes, updated in await self.records.profiles_since(0.0):
            s.profiles[(shop, buyer)] = Profile(tags, notes)
            self._profiles_seen = max(self._profiles_seen, updated)
        await self._follow_orders()
        await self.ticks_copier.start()
        return [asyncio.create_task(self._outbox_loop(), name="fenliu-pg-outbox"),
                asyncio.create_task(self._follow_loop(), name="fenliu-pg-follow"),
                asyncio.create_task(self.ticks_copier.run(), name="fenliu-pg-ticks")]

    async def close(self) -> None:
        await self.records.close()

    # -- history ------------------------------------------------------------------------------------

    def begin(self) -> None:
        """A new batch: rows of a batch that never committed are dropped with it."""
        self.rows = []
        self.orders = []

    def add(self, kind: str, entry: str, clock: float, shop: str | None, msg_id: str | None, cid: str | None,
            body: bytes | None, decisions: list[Decision], shard: int) -> None:
        """An input's row, fenced by the epoch under which this instance holds its shard."""
        self.rows.append((kind, entry, clock, shop, msg_id, cid, body, decisions, self.service.leases.epoch(shard)))

    def add_message(self, msg: Message, clock: float, decisions: list[Decision]) -> None:
        """A routed message, keyed by itself (routed again after a takeover, it replaces its row),
        and the order it names when that changes what is known of the buyer's current order
        (what conversion figures and the buyer's story read)."""
        self.add("message", f"m:{msg.shop_id}:{msg.msg_id}", clock, msg.shop_id, msg.msg_id, msg.conversation_id,
                 _encode(msg), decisions, self.service.keys.shard(msg.shop_id))
        if msg.order is not None and msg.order.order_id:
            order = self.service.buyers.note_order(msg.shop_id, msg.buyer_id, msg.order)
            if order is not None and order.order_id:
                self.orders.append((msg.shop_id, order.order_id, msg.buyer_id, order_json(order), clock))

    async def before_commit(self) -> None:
        """Write the batch's messages and requests, before Redis acknowledges them."""
        if self.rows:
            await self.records.write_history(self.rows)
        if self.orders:
            orders, self.orders = self.orders, []
            await self.records.save_orders(orders)

    def ticks(self, decisions: list[Decision]) -> bytes | None:
        """The ``ticks`` stream entry of a batch's decisions no message or request explains
        (timers, status changes), which the commit adds; ``None`` when there are none."""
        seen = {id(d) for row in self.rows for d in row[7]}
        ticks = [d for d in decisions if id(d) not in seen]
        return tick_entry(ticks, self.service.clock) if ticks else None

    def after_commit(self, *, ticked: bool) -> None:
        """The batch is committed; ``ticked``: it added ticks, which the copier takes at once
        (a commit without any does not wake it: two Redis commands saved per commit)."""
        self.rows = []
        if ticked:
            self.ticks_copier.nudge()

    # -- replies ------------------------------------------------------------------------------------

    async def reply(self, shop: str, cid: str, buyer: str, agent_id: str, text: str, now: float) -> int:
        rid = await self.records.outbox.add_reply(shop, cid, buyer, agent_id, text, now)
        self._nudge.set()
        return rid

    async def _outbox_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OUTBOX_POLL_S):
                    await self._nudge.wait()
            self._nudge.clear()
            try:
                claimed = await self.records.outbox.claim_due(time.time())
            except Exception as exc:  # noqa: BLE001 - PostgreSQL away: the rows wait, retry
                log.warning("outbox_claim_failed", error=str(exc))
                await asyncio.sleep(1.0)
                continue
            for item, attempts, doubt in claimed:
                if item.id not in self._sending:
                    self._sending.add(item.id)
                    asyncio.get_running_loop().create_task(self._deliver(item, attempts, doubt))

    async def _deliver(self, item: OutboundReply, attempts: int, doubt: bool) -> None:
        s = self.service
        try:
            await attempt(s.adapters.get(item.shop_id), item, attempts, s.metrics, self.records.outbox, logger=log,
                          in_doubt=doubt)
        except Exception as exc:  # noqa: BLE001 - the claim expires and the row is sent again
            log.warning("outbox_update_failed", reply_id=item.id, error=str(exc))
        finally:
            self._sending.discard(item.id)

    # -- profiles, notes, orders ---------------------------------------------------------------------

    async def update_profile(self, shop_id: str, buyer_id: str, current: Profile | None, *, tags: list[str] | None,
                             add_tags: tuple[str, ...], note: dict[str, Any] | None) -> Profile:
        """Read-modify-written in one transaction (``current``, this instance's copy, may be stale)."""
        new_tags, notes = await self.records.update_profile(shop_id, buyer_id, tags=tags, add_tags=add_tags, note=note)
        return Profile(new_tags, notes)

    async def add_note(self, shop_id: str, cid: str, agent_id: str | None, text: str, ts: float) -> None:
        await self.records.add_note(shop_id, cid, agent_id, text, ts)

    async def _follow_loop(self) -> None:
        """Profiles changed through other instances, every instance's new history and replies
        for the live figures, and history pruned past its retention."""
        pruned = 0.0
        first = True
        while True:
            if not first:  # the first round at once: the live figures wait for its rows
                await asyncio.sleep(PROFILES_S)
            first = False
            try:
                for shop, buyer, tags, notes, updated in await self.records.profiles_since(self._profiles_seen):
                    self.service.profiles[(shop, buyer)] = Profile(tags, notes)
                    self._profiles_seen = max(self._profiles_seen, updated)
                await self._follow_orders()
                await self._follow_rows()
                if time.monotonic() - pruned >= PRUNE_S:
                    pruned = time.monotonic()
                    await self.records.prune(self.service.config.main.storage.history_days)
            except Exception as exc:  # noqa: BLE001 - PostgreSQL away: try again next round
                log.warning("records_follow_failed", error=str(exc))

    async def _follow_orders(self) -> None:
        """Each buyer's current order (the one changed last), for the orders enrichment adds to
        messages, as pushes and messages through any instance left it."""
        s = self.service
        for shop, order_id, buyer, body, updated in await self.records.orders_since(self._orders_seen):
            s.order_buyer[(shop, order_id)] = buyer
            s.orders[(shop, buyer)] = _order.decode(body)
            self._orders_seen = max(self._orders_seen, updated)

    async def _follow_rows(self) -> None:
        """Fold every instance's new history rows and replies into the live figures (the
        dashboard, the workbench's status bar: ``on_journaled``), once each.

        Ids are taken from a sequence before a row commits, so a row may become visible after
        one with a higher id: each read goes back :data:`FOLLOW_OVERLAP` ids and skips the ids
        already folded. The first read starts a day back (the figures are today's)."""
        if not self.service.on_journaled:
            return
        since = time.time() - 86400
        fresh, new_replies = await self.records.rows_after(
            max(0, self._history_last - FOLLOW_OVERLAP), max(0, self._outbox_last - FOLLOW_OVERLAP), since,
            (self._history_seen.keys(), self._outbox_seen.keys()))
        if not fresh and not new_replies:
            self.records.followed.set()
            return
        rows: list[tuple] = []
        ids: dict[int, int] = {}
        events = [(row[2], 0, row[1], row) for row in fresh]
        events += [(r[6], 1, r[0], ("reply", *r[1:])) for r in new_replies]
        for _, source, rid, row in sorted(events, key=lambda e: (e[0], e[1], e[2])):
            if source == 1:
                ids[len(rows)] = rid
            rows.append(row)
        for row in fresh:
            self._remember(self._history_seen, row[1])
            self._history_last = max(self._history_last, row[1])
        for r in new_replies:
            self._remember(self._outbox_seen, r[0])
            self._outbox_last = max(self._outbox_last, r[0])
        self.service.journaled(rows, ids)
        self.records.followed.set()

    @staticmethod
    def _remember(seen: dict[int, None], rid: int) -> None:
        seen[rid] = None
        if len(seen) > 4 * FOLLOW_OVERLAP:
            for old in list(seen)[:len(seen) - 2 * FOLLOW_OVERLAP]:
                del seen[old]

    # -- what every instance shows ------------------------------------------------------------------

    async def open_conversations(self) -> list[Conversation]:
        """Every open conversation of the deployment, from the Redis mirror (each shard's owner
        writes it in its commits), not only this instance's shards."""
        s = self.service
        pipe = s.r.pipeline(transaction=False)
        for n in range(s.keys.shards):
            pipe.hvals(s.keys.convs(n))
        return [_conversation.decode(raw) for vals in await pipe.execute() for raw in vals]

    async def conversation(self, cid: str) -> tuple[Conversation, list[WsHistoryItem], list[dict[str, Any]]] | None:
        """One open conversation as every instance shows it: the mirror's state, the history from
        PostgreSQL (messages, bot answers, agents' replies) and its notes."""
        s = self.service
        raw = await s.r.hget(s.keys.convs(s.keys.shard_of_conversation(cid)), cid)
        if raw is None:
            return None
        conv = _conversation.decode(raw)
        items, notes = await self.records.conversation(cid, conv.opened_at)
        return conv, items, notes

