"""The running service behind ``fenliu serve``: one router, its records, agents' sessions.

It is built from parts, each with one job, and only wires them together:

- the **engine** feeds the router and commits what it decides: on one instance
  :class:`router.service.loop.RouterLoop` with its :class:`router.service.journal.Journal`
  (journal, then acknowledge; recovery is replay), with Redis the shard streams
  (:mod:`router.service.redis.stream`);
- the **intake** turns callers' requests into the engine's work (:mod:`router.service.intake`);
- the **desk** holds agents' sessions, their reconnect grace, and tells them decisions
  (:mod:`router.service.sessions`), remembering what they are shown in :class:`Memory`;
- the **buyers**' profiles, notes and current orders enrich each message before it is routed
  (:mod:`router.service.buyers`);
- the **outbox** sends agents' replies until the platform acknowledges (:mod:`router.service.outbox`);
- the **view** shows open conversations to the API (:mod:`router.service.views`).

The Redis backend (:class:`router.service.redis.service.RedisService`) supplies its own parts to
the same wiring. See :mod:`router.service.server` for the endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import structlog

from adapters import Adapter, OrderContext, adapter_class
from router.core.config import Config
from router.core.dedupe import SeenIds
from router.core.models import Conversation, Decision, Event, Message, OutboundResult, WsAssigned
from router.core.pipeline import Router
from router.service.buyers import BuyerRecords, Profile, SqliteBook
from router.service.errors import JournalFailed
from router.service.intake import LocalIntake
from router.service.journal import Journal
from router.service.lifecycle import IdleCloser
from router.service.loop import IngestResult, RouterLoop
from router.service.metrics import Metrics
from router.service.outbox import Outbox, SqliteLedger
from router.service.reload import Reloader
from router.service.sessions import HISTORY, LocalPresence, Memory, Session, Sessions
from router.service.views import ConversationView, LocalView
from router.storage.records import Records, SqliteRecords
from router.storage.store import Store

log = structlog.get_logger("fenliu.service")

__all__ = ["HISTORY", "ConversationView", "IngestResult", "Parts", "Profile", "Service", "Session", "local_parts"]


class Engine(Protocol):
    """Feeds the router and commits what it decides (:class:`RouterLoop`, or the Redis backend's
    :class:`router.service.redis.stream.StreamLoop`)."""

    async def open(self) -> None:
        """Open the stores and rebuild the router's state."""

    def tasks(self) -> list[asyncio.Task]:
        """Start the engine's loops; the first is the consumer, drained at stop."""

    def started(self) -> None: ...

    async def drain(self, consumer: asyncio.Task | None) -> None: ...

    async def close(self) -> None: ...


class Intake(Protocol):
    """Turns callers' requests into the engine's work (:class:`LocalIntake`, or the Redis
    backend's :class:`router.service.redis.intake.SharedIntake`)."""

    async def ingest(self, messages: list[Message]) -> IngestResult: ...

    async def event(self, event: Event, requester: Any = None, *, via: str = "ws") -> list[Decision]: ...

    async def reply(self, agent_id: str, conversation_id: str, text: str) -> OutboundResult: ...

    async def order_context(self, items: list[OrderContext]) -> None: ...

    async def reload(self, config: Config) -> list[Decision]: ...


class View(Protocol):
    """Shows open conversations to the API (:class:`LocalView`, or the Redis backend's
    :class:`router.service.redis.view.SharedView`)."""

    async def open_conversations(self) -> list[Conversation]: ...

    async def conversation_view(self, cid: str) -> ConversationView | None: ...

    async def note_target(self, agent_id: str | None, cid: str) -> tuple[str, str]: ...


class Parts(NamedTuple):
    """What a backend supplies to the wiring."""

    router: Router
    engine: Engine
    intake: Intake
    desk: Sessions
    view: View
    buyers: BuyerRecords
    journal: Journal | None = None


def local_parts(service: Service) -> Parts:
    """One instance with its own journal and SQLite file."""
    config = service.config
    router = Router(config, reservations=True, clock=lambda: service.clock,
                    dedupe=SeenIds(config.main.server.dedupe_window, keep_evicted=True))
    return Parts(router, RouterLoop(service), LocalIntake(service), Sessions(service, LocalPresence(service)),
                 LocalView(service), BuyerRecords(SqliteBook(service.store)), Journal(service))


class Service:
    """Everything ``serve`` runs, minus HTTP: the parts a backend supplies (``parts``), wired."""

    def __init__(self, config: Config, *, store_path: str | Path | None = None, simulate: bool = False,
                 parts: Callable[[Service], Parts] = local_parts) -> None:
        self.config = config
        self.simulate = simulate
        self.store = Store(store_path or config.main.storage.path)
        #: Accounts, figures and (with PostgreSQL) the other records: router/storage/records.py.
        self.records: Records = SqliteRecords(self.store)
        #: Why the service can no longer work (``/healthz`` answers 503 with it), or ``None``.
        self.failed: str | None = None
        #: The router's clock: never behind the last input's.
        self.clock = time.time()
        self.started = time.time()
        self.ready = False
        self.stopping = False
        self.pending_ingest = 0
        self.token_key = b""
        self.metrics = Metrics(lambda: self.router)
        self.metrics.ingest_queue.set_function(lambda: self.pending_ingest)
        self.reloader = Reloader(config.dir, self._apply_reload, extra=config.plugins.extra,
                                 on_failure=lambda _result: self.metrics.reload_failures.inc(),
                                 current=lambda: self.config)
        self.adapters: dict[str, Adapter] = {}
        self.on_committed: list[Callable[[list[Decision]], None]] = []
        #: Called on the event loop with each committed batch of journal rows and the outbox ids of
        #: its reply rows (by index): what the store now holds, for figures kept live (router/service/today.py).
        self.on_journaled: list[Callable[[list[tuple], dict[int, int]], None]] = []
        self.memory = Memory()
        # The parts' tables under the names the HTTP layer, the workbench and tests read (the same
        # dicts: a part that clears one clears it here too).
        self.owner, self.history = self.memory.owner, self.memory.history
        self.context, self.waiting_since = self.memory.context, self.memory.waiting_since
        self.outbox = Outbox(lambda: self.adapters, self.metrics, SqliteLedger(self.store), lambda: self.stopping)
        self._tasks: list[asyncio.Task] = []
        self.router, self.engine, self.intake, self.desk, self.view, self.buyers, self.journal = parts(self)
        self.profiles, self.orders, self.order_buyer = self.buyers.profiles, self.buyers.orders, self.buyers.order_buyer
        self.sessions: dict[str, Session] = self.desk.sessions

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the stores and rebuild the router, then start the engine and the clock."""
        await self.engine.open()
        self.make_adapters()
        self._tasks = [*self.engine.tasks(),
                       asyncio.create_task(self.outbox.run(), name="fenliu-outbox"),
                       asyncio.create_task(IdleCloser(self).run(), name="fenliu-idle-close")]
        if self.config.main.server.watch_config:
            self._tasks.append(asyncio.create_task(self.reloader.watch(), name="fenliu-config-watch"))
        self.engine.started()
        self.ready = True

    async def stop(self) -> None:
        """Drain what is queued, commit it, then close the stores."""
        if self.stopping:
            return
        self.stopping = True
        self.ready = False
        self.desk.stop()
        await self.engine.drain(self._tasks[0] if self._tasks else None)
        for task in self._tasks:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # a background task that died must not stop the store from closing
                log.exception("task_failed", task=task.get_name())
        for adapter in self.adapters.values():
            with contextlib.suppress(Exception):
                await adapter.close()
        await self.engine.close()

    def fail(self, why: str) -> None:
        """The journal cannot be written: refuse everything from now on."""
        self.failed = why
        self.ready = False

    def refusal(self) -> JournalFailed:
        """What every caller gets once the service has failed closed."""
        return JournalFailed(f"the service cannot journal: {self.failed}")

    def make_adapters(self) -> None:
        adapters: dict[str, Adapter] = {}
        for sid, shop in self.config.shops.items():
            name = "simulator" if self.simulate and not shop.callback_url else shop.adapter
            cls = adapter_class(name)
            if cls is None:
                log.error("unknown_adapter", shop_id=sid, adapter=name)
                continue
            adapters[sid] = cls(shop, self)
        self.adapters = adapters

    def journaled(self, rows: list[tuple], ids: dict[int, int]) -> None:
        """Tell :attr:`on_journaled` what the store now holds; a failing callback is logged."""
        for cb in self.on_journaled:
            try:
                cb(rows, ids)
            except Exception:  # noqa: BLE001
                log.exception("journaled_callback_failed")

    @property
    def _seq(self) -> int:
        """The last journal entry (0 without a journal of this instance's own)."""
        return self.journal.seq if self.journal is not None else 0

    # -- what callers hand the service ---------------------------------------------------------------

    async def ingest(self, messages: list[Message]) -> IngestResult:
        """Route messages; returns once they are committed (one instance) or stored (Redis)."""
        return await self.intake.ingest(messages)

    async def event(self, event: Event, requester: Any = None, *, via: str = "ws") -> list[Decision]:
        """Apply an event (accept, close, transfer, status); raises InputError if refused."""
        return await self.intake.event(event, requester, via=via)

    async def reply(self, agent_id: str, conversation_id: str, text: str) -> OutboundResult:
        """An agent's reply: checked by the outbound filters, stored, then sent."""
        return await self.intake.reply(agent_id, conversation_id, text)

    async def order_context(self, items: list[OrderContext]) -> None:
        """Order news from a platform (the buyer's story, current order and open conversation)."""
        await self.intake.order_context(items)

    async def reload(self, config: Config) -> list[Decision]:
        return await self.intake.reload(config)

    async def _apply_reload(self, config: Config) -> None:
        await self.reload(config)
        self.metrics.reloads.inc()

    # -- buyers -------------------------------------------------------------------------------------

    async def set_profile(self, shop_id: str, buyer_id: str, *, tags: list[str] | None = None,
                          add_tags: tuple[str, ...] = (), note: str | None = None,
                          author: str | None = None) -> Profile:
        """Set or extend a buyer's tags and add a note; applies to the buyer's next message."""
        return await self.buyers.set_profile(shop_id, buyer_id, tags=tags, add_tags=add_tags, note=note, author=author)

    async def add_note(self, agent_id: str | None, conversation_id: str, text: str, tags: tuple[str, ...] = ()) -> Profile:
        shop_id, buyer_id = await self.view.note_target(agent_id, conversation_id)
        return await self.buyers.add_note(shop_id, buyer_id, conversation_id, agent_id, text, tags)

    # -- agents' sessions ------------------------------------------------------------------------------

    async def attach(self, session: Session) -> Session | None:
        """An agent connected; returns the session it replaces, if any."""
        return await self.desk.attach(session)

    def detach(self, session: Session) -> None:
        self.desk.detach(session)

    async def hello(self, agent_id: str) -> tuple[str, list[WsAssigned]]:
        """What a newly connected agent is told: its status and the conversations it holds."""
        return await self.desk.presence.hello(agent_id)

    def snapshot(self, cid: str, cause: str = "message") -> WsAssigned | None:
        return self.desk.snapshot(cid, cause)

    def conversations_of(self, agent_id: str) -> list[str]:
        return self.desk.conversations_of(agent_id)

    # -- what the API shows ----------------------------------------------------------------------------

    async def open_conversations(self) -> list[Conversation]:
        """The open conversations this service shows."""
        return await self.view.open_conversations()

    async def conversation_view(self, cid: str) -> ConversationView | None:
        return await self.view.conversation_view(cid)

    def outbox_pending(self) -> int:
        return self.outbox.pending()
