"""Where the records people read live: the small interface the service, the account book, logins
and statistics go through, implemented by the SQLite file (:class:`SqliteRecords`, the embedded
default) and by PostgreSQL (:class:`router.storage.pg.records.PgRecords`, shared by several instances).

One class per store rather than ``if backend ==`` in every caller: a caller asks for accounts or
figures and does not know where they come from. The SQLite side wraps what the service already
does on its store; what only several instances need (claimed outbox rows, history written by
every instance) is PostgreSQL's alone (docs/deploy.md, "PostgreSQL").
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from router.storage import accounts as acct
from router.storage.accounts import Account
from router.storage.store import read_only

if TYPE_CHECKING:
    from collections.abc import Iterable

    from router.core.config import Config
    from router.storage.figures import Stats
    from router.core.models import BuyerOrder, OpenAfterSale
    from router.storage.store import Store


class Records:
    """What every records store answers."""

    shared = False  # True: every instance reads and writes the same records

    async def start(self) -> None:
        """Open (and, for a server database, migrate); called once by the service's start."""

    async def close(self) -> None:
        """Close what :meth:`start` opened."""

    async def accounts(self) -> dict[str, Account]:
        """Every account by name (the account book re-reads it every half second)."""
        raise NotImplementedError

    def lookup_blocking(self, name: str) -> tuple[Account, str] | None:
        """The account and its password hash, from a worker thread (a login hashes there)."""
        raise NotImplementedError

    async def rehash(self, name: str, old_hash: str, new: str) -> None:
        """Replace the password hash if it is still ``old_hash`` (a login found older parameters)."""
        raise NotImplementedError

    async def stats(self, config: Config, **period: Any) -> Stats:
        """:func:`router.storage.stats.compute`'s figures over the records (``period``: its keywords)."""
        raise NotImplementedError

    async def figure_rows(self, since: float, until: float) -> tuple[list[tuple], int, int]:
        """The live figures' start-up read (:class:`router.service.today.Today`): the rows of ``[since,
        until)`` in :func:`router.storage.figures.read_rows`'s form, and the last journal seq and outbox
        id read (a batch fed while reading is folded only above them)."""
        raise NotImplementedError

    async def buyer_orders(self, shop_id: str, buyer_id: str) -> list[BuyerOrder]:
        """The buyer's story (:func:`router.storage.story.buyer_orders`)."""
        raise NotImplementedError

    async def open_aftersales(self, shops: Iterable[str]) -> list[OpenAfterSale]:
        """Open after-sale requests of ``shops`` (:func:`router.storage.story.open_aftersales`)."""
        raise NotImplementedError


class SqliteRecords(Records):
    """The instance's own SQLite file: reads from a read-only connection (no write lock taken),
    figures in the store's thread as before."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _read_accounts(self) -> dict[str, Account]:
        conn = read_only(self.store.path)
        try:
            return {a.name: a for a in acct.list_accounts(conn)}
        finally:
            conn.close()

    async def accounts(self) -> dict[str, Account]:
        return await asyncio.to_thread(self._read_accounts)

    def lookup_blocking(self, name: str) -> tuple[Account, str] | None:
        conn = read_only(self.store.path)
        try:
            return acct.lookup(conn, name)
        finally:
            conn.close()

    async def rehash(self, name: str, old_hash: str, new: str) -> None:
        await self.store.call(lambda c: acct.store_rehash(c, name, old_hash, new))

    async def stats(self, config: Config, **period: Any) -> Stats:
        from router.storage.stats import compute

        return await self.store.call(lambda conn: compute(conn, config, **period))

    def _figure_rows(self, since: float, until: float) -> tuple[list[tuple], int, int]:
        from router.storage.figures import read_rows

        c = read_only(self.store.path)
        try:
            c.execute("BEGIN")  # one snapshot: the journal, the decisions and the outbox agree
            return read_rows(c, since, until)
        finally:
            c.close()

    async def figure_rows(self, since: float, until: float) -> tuple[list[tuple], int, int]:
        return await asyncio.to_thread(self._figure_rows, since, until)  # a worker thread, once, off the loop

    async def buyer_orders(self, shop_id: str, buyer_id: str) -> list[BuyerOrder]:
        from router.storage.story import buyer_orders

        return await self.store.call(lambda conn: buyer_orders(conn, shop_id, buyer_id))

    async def open_aftersales(self, shops: Iterable[str]) -> list[OpenAfterSale]:
        from router.storage.story import open_aftersales

        shops = list(shops)
        return await self.store.call(lambda conn: open_aftersales(conn, shops))
