"""Password logins that hold under a flood: a bounded pool for the argon2 checks, and lockouts.

A password check is argon2, ≈ 0.5 s of CPU on purpose. Run in the store's writer thread it held
one write transaction per queued login, so a hundred wrong guesses starved the journal of its
lock and ingest stalled or failed. :class:`LoginGuard` reads the hash on a read-only connection
and checks it in a small thread pool of its own (argon2-cffi releases the GIL), with a queue
limit past which a login is refused at once (429 ``login_busy``); only a rehash is written, in a
short store job of its own.

Failures are counted per account name and per client address; ``max_failures`` of them lock the
name or the address out for ``lockout_s``, doubling with each further lockout up to
``lockout_max_s``. A locked name or address is refused (429 ``locked_out``) before any hash is
checked, so a flood costs the CPU almost nothing. The tables are LRU-bounded, and names with no
account have a table of their own: guessed names cannot push a real account's lockout out.
Lockouts live in memory: a restart forgets them (docs/security.md, "Logins and lockouts").
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import structlog
from cachetools import LRUCache

from router.storage import accounts as acct
from router.core.i18n import _
from router.storage.accounts import Account
from router.storage.store import Store, read_only

if TYPE_CHECKING:
    from router.core.config import ServerConfig
    from router.service.metrics import Metrics

log = structlog.get_logger("fenliu.login")


class LoginRefused(Exception):
    """A login answered without a token: wrong password (401), locked out or busy (429),
    store unreadable (503). ``retry_after`` in whole seconds for the ``Retry-After`` header."""

    def __init__(self, status: int, message: str, code: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after


class _Record(msgspec.Struct):
    failures: int = 0
    lockouts: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class Limiter:
    """Failures and lockouts for one kind of key, at most ``size`` keys (least recently used
    dropped). A key quiet for ``lockout_max_s`` after its last failure or lockout is forgotten,
    so the doubling starts again from ``lockout_s``."""

    def __init__(self, max_failures: int, lockout_s: float, lockout_max_s: float, size: int) -> None:
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self.lockout_max_s = lockout_max_s
        self.table: LRUCache[str, _Record] = LRUCache(maxsize=size)

    def _get(self, key: str, now: float) -> _Record | None:
        record = self.table.get(key)
        if record is not None and now >= max(record.last, record.locked_until) + self.lockout_max_s:
            del self.table[key]
            return None
        return record

    def remaining(self, key: str, now: float) -> float:
        """Seconds ``key`` stays locked out (0: not locked)."""
        record = self._get(key, now)
        return max(0.0, record.locked_until - now) if record is not None else 0.0

    def fail(self, key: str, now: float) -> float:
        """Count a failure; the length of the lockout it starts, else 0. A failure that lands
        while the key is locked (its check began before) does not count again."""
        record = self._get(key, now)
        if record is None:
            record = self.table[key] = _Record()
        if record.locked_until > now:
            return 0.0
        record.last = now
        record.failures += 1
        if record.failures < self.max_failures:
            return 0.0
        length = min(self.lockout_max_s, self.lockout_s * 2 ** min(record.lockouts, 62))
        record.failures = 0
        record.lockouts += 1
        record.locked_until = now + length
        return length

    def reset(self, key: str) -> None:
        self.table.pop(key, None)


class LoginGuard:
    """Checks logins for one service. ``now`` is the clock lockouts run on (monotonic; tests
    replace it to end a lockout without sleeping)."""

    def __init__(self, store: Store, settings: ServerConfig, metrics: Metrics | None = None,
                 now: Callable[[], float] = time.monotonic,
                 lookup: Callable[[str], tuple[Account, str] | None] | None = None,
                 rehash: Callable[[str, str, str], Awaitable[None]] | None = None) -> None:
        """``lookup``: the account and its hash from a worker thread, ``rehash(name, old, new)``:
        store a hash with today's parameters (default: the store's file; the service passes its
        records store's, router/storage/records.py)."""
        self.store = store
        self.path = Path(store.path)
        self.lookup = lookup or self._lookup_file
        self.rehash = rehash or self._rehash_file
        self.metrics = metrics
        self.now = now
        limits = (settings.login_max_failures, settings.login_lockout_s, settings.login_lockout_max_s,
                  settings.login_track_max)
        self.accounts = Limiter(*limits)
        self.unknown = Limiter(*limits)  # names with no account: an attacker's to fill, kept apart
        self.clients = Limiter(*limits)
        self.capacity = settings.login_workers + settings.login_queue_max
        self.running = 0  # logins admitted: hashing or waiting for a thread
        self._slots = asyncio.Semaphore(settings.login_workers)
        self._pool = ThreadPoolExecutor(settings.login_workers, thread_name_prefix="fenliu-login")

    def close(self) -> None:
        """Drop queued checks; one already hashing finishes in its thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def cleanup(self, _app: object) -> None:
        """For ``app.on_cleanup``."""
        self.close()

    async def login(self, name: str, password: str, client: str) -> Account:
        """The account when ``password`` is right and neither the name nor ``client`` is locked
        out, else :class:`LoginRefused`."""
        self._refuse_locked(name, client)
        if self.running >= self.capacity:
            self._count("refused", "busy")
            log.debug("login_refused", reason="busy", account=name, client=client)
            raise LoginRefused(429, _("too many logins are being checked ({n}); retry in a second", n=self.capacity),
                               "login_busy", 1)
        self.running += 1
        try:
            async with self._slots:  # waiting here is the queue; the pool only ever hashes
                self._refuse_locked(name, client)  # locked while this login waited: no hash spent on it
                found, ok, rehashed = await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._check, name, password)
        finally:
            self.running -= 1
        if not ok:
            self._failed(name, client, known=found is not None)
        self._refuse_locked(name, client)  # locked while this check ran: its outcome stays unsaid
        if not ok or found is None:
            raise LoginRefused(401, _("wrong account or password"))
        account, old_hash = found
        self.accounts.reset(name)
        if rehashed is not None:
            await self.rehash(name, old_hash, rehashed)
        return account

    def _check(self, name: str, password: str) -> tuple[tuple[Account, str] | None, bool, str | None]:
        """In a pool thread: read the hash (a read-only connection takes no write lock), check it."""
        try:
            found = self.lookup(name)
        except Exception as exc:  # noqa: BLE001 - whichever store: unreadable is a 503
            log.error("login_store_unreadable", error=str(exc))
            raise LoginRefused(503, _("the account store cannot be read; retry later"), "unavailable", 1) from exc
        ok = acct.check_password(found[1] if found else None, password)
        rehashed = acct.new_hash(found[1], password) if ok and found else None
        return found, ok, rehashed

    async def _rehash_file(self, name: str, old_hash: str, new: str) -> None:
        await self.store.call(lambda c: acct.store_rehash(c, name, old_hash, new))

    def _lookup_file(self, name: str) -> tuple[Account, str] | None:
        conn = read_only(self.path)
        try:
            return acct.lookup(conn, name)
        finally:
            conn.close()

    def _refuse_locked(self, name: str, client: str) -> None:
        now = self.now()
        wait = max(self.accounts.remaining(name, now), self.unknown.remaining(name, now),
                   self.clients.remaining(client, now))
        if wait > 0:
            self._count("refused", "locked_out")
            log.debug("login_refused", reason="locked_out", account=name, client=client)
            retry = max(1, math.ceil(wait))
            raise LoginRefused(429, _("too many failed logins for this account or address; retry in {retry} s", retry=retry),
                               "locked_out", retry)

    def _failed(self, name: str, client: str, *, known: bool) -> None:
        now = self.now()
        self._count("failures")
        log.info("login_failed", account=name, client=client)
        for scope, limiter, key in (("account", self.accounts if known else self.unknown, name),
                                    ("client", self.clients, client)):
            length = limiter.fail(key, now)
            if length:
                self._count("lockouts", scope)
                log.warning("login_locked_out", scope=scope, key=key, seconds=length,
                            lockouts=limiter.table[key].lockouts)

    def _count(self, what: str, *labels: str) -> None:
        if self.metrics is not None:
            metric = {"failures": self.metrics.login_failures, "lockouts": self.metrics.login_lockouts,
                      "refused": self.metrics.logins_refused}[what]
            (metric.labels(*labels) if labels else metric).inc()
