"""A psycopg connection that takes SQLite's ``?`` placeholders, for the few plain-SQL helpers
written once for both stores (:mod:`router.storage.accounts`: the rules of main and sub-accounts are
not copied for PostgreSQL), and :class:`SyncStore`, the ``run_sync`` the command line uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from router.core.config import Config
from router.storage.pg import NO_DATABASE, database_url, schema

T = TypeVar("T")


class QmarkConnection:
    """Enough of ``sqlite3.Connection`` for helpers whose SQL both databases read alike: ``?``
    becomes ``%s`` (the helpers' SQL has no literal ``?`` nor ``%``)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        return self.conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> psycopg.Cursor:
        cur = self.conn.cursor()
        cur.executemany(sql.replace("?", "%s"), rows)  # type: ignore[arg-type]
        return cur


class SyncStore:
    """The records database for a command-line tool: ``run_sync(fn)`` runs ``fn`` in one
    transaction, as :meth:`router.storage.store.Store.run_sync` does on the SQLite file."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, connect_timeout=5)
        schema.upgrade(self.conn)
        self.conn.autocommit = False

    @classmethod
    def from_config(cls, config: Config) -> SyncStore:
        url = database_url(config.main.storage)
        if not url:
            raise ValueError(NO_DATABASE)
        return cls(url)

    def run_sync(self, fn: Callable[[Any], T]) -> T:
        with self.conn.transaction():
            return fn(QmarkConnection(self.conn))

    def close_sync(self) -> None:
        self.conn.close()
