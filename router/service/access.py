"""Who may see and do what: the one isolation rule of ``fenliu serve``, and the gate every route
goes through.

An account's :class:`Scope` is the set of shops it may see (its permitted shops that exist; for
an agent account, also within its agent's shops), its role and the agent it works as. Every
handler is registered through :func:`gate` (an account, a minimum role, optionally all shops),
:func:`signed` (a shop's bridge, checked by the handler's HMAC) or :func:`public`; ``make_app``
refuses to start with a route that is none of these (:func:`check_routes`), so a new endpoint
cannot forget the rule. What a handler or a pushed frame reveals is filtered with the scope's
methods — :meth:`Scope.sees`, :meth:`Scope.visible_frame`, :meth:`Scope.agent_view` — never with
ad-hoc shop checks.

Tokens travel only in the ``Authorization`` header. A browser's WebSocket cannot set headers, so
it trades its token for a single-use :class:`Tickets` ticket (``POST /v1/auth/ws-ticket``) valid
for :data:`TICKET_TTL_S` seconds and passes that as ``?ticket=``. :class:`AccountBook` keeps the
accounts in memory (refreshed every :data:`REFRESH_S`) and closes an open socket with
:data:`CLOSE_REVOKED` within a second of its account's password changing, the account being
disabled or removed, or its token expiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from aiohttp import web

from router.storage import accounts as acct
from router.storage.accounts import Account
from router.core.errors import HTTPError
from router.core.i18n import _
from router.service.http import SERVICE

if TYPE_CHECKING:
    from router.core.config import Config
    from router.service.service import Service

log = structlog.get_logger("fenliu.access")

#: The close code of a socket whose token stopped being valid (like HTTP 401).
CLOSE_REVOKED = 4401
#: How long a WebSocket ticket may wait before it is used.
TICKET_TTL_S = 30.0
#: How often the account book re-reads the accounts table (and checks open sockets).
REFRESH_S = 0.5
#: Tickets kept at most (a flood of ticket requests cannot grow memory without bound).
TICKETS_MAX = 10_000

_ROLE_RANK = {"agent": 0, "supervisor": 1, "admin": 2}


# -- the rule ---------------------------------------------------------------------------------------


def agent_of(config: Config, account: Account) -> str | None:
    """The agent an account works as: its ``agent_id``, or the agent whose ``account`` names it."""
    if account.agent_id and account.agent_id in config.agents:
        return account.agent_id
    for aid, agent in config.agents.items():
        if agent.account == account.name:
            return aid
    return None


def agent_shops(config: Config, agent_id: str) -> list[str]:
    """The shops an agent serves (``*`` expanded), in configuration order."""
    cfg = config.agents[agent_id]
    return list(config.shops) if "*" in cfg.shops else [s for s in cfg.shops if s in config.shops]


class Scope:
    """What one account may see and do under one configuration."""

    __slots__ = ("account", "config", "agent_id", "shops", "all_shops")

    def __init__(self, account: Account, config: Config) -> None:
        self.account = account
        self.config = config
        self.agent_id = agent_of(config, account)
        shops = set(config.shops) if "*" in account.shops else {s for s in account.shops if s in config.shops}
        if account.role == "agent" and self.agent_id is not None:
            shops &= set(agent_shops(config, self.agent_id))  # an agent's account never sees beyond its agent
        self.shops: frozenset[str] = frozenset(shops)
        self.all_shops = "*" in account.shops and account.role != "agent"

    @property
    def role(self) -> str:
        return self.account.role

    @property
    def is_supervisor(self) -> bool:
        return self.account.role in ("supervisor", "admin")

    def sees(self, shop_id: str) -> bool:
        return shop_id in self.shops

    def sees_conversation(self, cid: str) -> bool:
        return cid.split(":", 1)[0] in self.shops

    def require_shop(self, shop_id: str) -> str:
        """``shop_id`` if permitted; a 403 otherwise (a shop outside the scope is not said to exist
        or not), a 404 for an unknown shop only to an all-shops account."""
        if shop_id in self.shops:
            return shop_id
        if self.all_shops:
            raise HTTPError(404, _("unknown shop {shop!r}", shop=shop_id), "unknown_shop")
        raise HTTPError(403, _("forbidden: shop {shop!r} is not permitted to account {account!r}",
                               shop=shop_id, account=self.account.name), "shop_forbidden")

    def require_conversation(self, cid: str) -> str:
        """The shop of conversation ``cid`` (``shop:buyer``) if permitted."""
        return self.require_shop(cid.split(":", 1)[0])

    def require_role(self, role: str) -> None:
        if _ROLE_RANK[self.account.role] < _ROLE_RANK[role]:
            raise HTTPError(403, _("forbidden: this needs the {role} role; account {account!r} is {has}",
                                   role=role, account=self.account.name, has=self.account.role), "role_forbidden")

    def require_all_shops(self) -> None:
        if not self.all_shops:
            raise HTTPError(403, _("forbidden: this needs an account permitted all shops (*); {account!r} "
                                   "is limited to {shops}", account=self.account.name,
                                   shops=", ".join(sorted(self.shops)) or "none"), "all_shops_required")

    def visible_agents(self) -> list[str]:
        """Agents that serve at least one of the scope's shops."""
        return [aid for aid in self.config.agents if any(s in self.shops for s in agent_shops(self.config, aid))]

    def may_manage_agent(self, agent_id: str) -> bool:
        """A supervisor changes an agent (status, moves) only when every shop it serves is theirs:
        otherwise the change would move another client's conversations."""
        if agent_id == self.agent_id:
            return True
        shops = agent_shops(self.config, agent_id)
        return self.is_supervisor and bool(shops) and all(s in self.shops for s in shops)

    def agent_view(self, conversations: Iterable[str]) -> tuple[list[str], int]:
        """An agent's conversations as this scope may see them: the ids of its shops, and only a
        count of the others (their ids contain buyer ids)."""
        mine, others = [], 0
        for cid in conversations:
            if self.sees_conversation(cid):
                mine.append(cid)
            else:
                others += 1
        return mine, others

    def visible_frame(self, frame: Any) -> Any:
        """A pushed frame as this scope may see it: ``None`` for a frame about a conversation or
        shop outside the scope; a ``hello`` keeps only the visible conversations."""
        hello = getattr(frame, "conversations", None)
        if hello is not None and isinstance(hello, list):
            kept = [c for c in hello if self.sees_conversation(c.conversation_id)]
            return frame if len(kept) == len(hello) else msgspec.structs.replace(frame, conversations=kept)
        shop = getattr(frame, "shop_id", None)
        if shop is not None and shop not in self.shops:
            return None
        cid = getattr(frame, "conversation_id", None)
        if cid is not None and not self.sees_conversation(cid):
            return None
        return frame


class _FrameKeys(msgspec.Struct):
    """The fields of an encoded frame that decide who may see it."""

    shop_id: str | None = None
    conversation_id: str | None = None
    conversations: list[_FrameKeys] | None = None


_frame_keys = msgspec.json.Decoder(_FrameKeys)


def visible_encoded(scope: Scope, data: bytes) -> bool:
    """Whether an already encoded frame (the Redis backend relays them) is visible to ``scope``.
    A ``hello`` is built locally, never relayed, so a list of conversations here is refused
    whole if any is outside the scope."""
    try:
        keys = _frame_keys.decode(data)
    except msgspec.MsgspecError:
        return False
    if keys.shop_id is not None and keys.shop_id not in scope.shops:
        return False
    if keys.conversation_id is not None and not scope.sees_conversation(keys.conversation_id):
        return False
    return all(c.conversation_id is None or scope.sees_conversation(c.conversation_id) for c in keys.conversations or ())


# -- accounts in memory, and the sockets they hold open ------------------------------------------------


class _Watched(msgspec.Struct):
    name: str
    generation: int
    expires: float
    close: Callable[[int, bytes], Awaitable[Any]]


class AccountBook:
    """The accounts table in memory, re-read every :data:`REFRESH_S` from a read-only connection
    (a token check costs no store round trip, and no write transaction ever waits for it), plus
    the open sockets, closed with :data:`CLOSE_REVOKED` once their account's token is no longer
    valid."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.accounts: dict[str, Account] = {}
        self.loaded = 0.0
        self.watched: dict[object, _Watched] = {}
        self.task: asyncio.Task | None = None

    async def refresh(self) -> None:
        try:  # the service's records store: its SQLite file, or PostgreSQL shared by every instance
            self.accounts = await self.service.records.accounts()
        except Exception as exc:  # noqa: BLE001 - unreadable for now: keep the last book
            log.warning("accounts_unreadable", reason=str(exc))
            return
        self.loaded = time.monotonic()

    async def get(self, name: str) -> Account | None:
        """The account as of at most :data:`REFRESH_S` ago (read now if the book is stale or
        does not know it yet: an account created a moment ago logs in at once)."""
        found = self.accounts.get(name)
        if found is None or time.monotonic() - self.loaded > 2 * REFRESH_S:
            await self.refresh()
            found = self.accounts.get(name)
        return found

    def invalidate(self) -> None:
        self.loaded = 0.0

    def watch(self, key: object, account: Account, expires: float, close: Callable[[int, bytes], Awaitable[Any]]) -> None:
        self.watched[key] = _Watched(account.name, account.generation, expires, close)

    def unwatch(self, key: object) -> None:
        self.watched.pop(key, None)

    def revoked(self, w: _Watched, now: float) -> str | None:
        account = self.accounts.get(w.name)
        if account is None:
            return "account removed"
        if account.disabled:
            return "account disabled"
        if account.generation != w.generation:
            return "password changed"
        if w.expires <= now:
            return "token expired"
        return None

    def sweep(self, now: float | None = None) -> None:
        """Close every watched socket whose account's token is no longer valid."""
        now = time.time() if now is None else now
        for key, w in list(self.watched.items()):
            why = self.revoked(w, now)
            if why is not None:
                del self.watched[key]
                log.info("socket_revoked", account=w.name, reason=why)
                asyncio.get_running_loop().create_task(w.close(CLOSE_REVOKED, why.encode()))

    async def run(self) -> None:
        while True:
            await self.refresh()
            self.sweep()
            await asyncio.sleep(REFRESH_S)

    async def start(self, app: web.Application) -> None:
        await self.refresh()
        self.task = asyncio.create_task(self.run())

    async def stop(self, app: web.Application) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


BOOK = web.AppKey("accounts", AccountBook)


class _Ticket(msgspec.Struct):
    name: str
    generation: int
    token_expires: float
    expires: float


class Tickets:
    """Single-use, short-lived tickets that open a WebSocket in place of a token in its URL."""

    def __init__(self) -> None:
        self.open: OrderedDict[str, _Ticket] = OrderedDict()

    def issue(self, account: Account, token_expires: float, now: float | None = None) -> tuple[str, float]:
        now = time.time() if now is None else now
        while self.open and (len(self.open) >= TICKETS_MAX or next(iter(self.open.values())).expires <= now):
            self.open.popitem(last=False)
        ticket = secrets.token_urlsafe(24)
        expires = min(now + TICKET_TTL_S, token_expires)
        self.open[ticket] = _Ticket(account.name, account.generation, token_expires, expires)
        return ticket, expires

    def redeem(self, ticket: str, now: float | None = None) -> _Ticket | None:
        found = self.open.pop(ticket, None)
        if found is None or found.expires <= (time.time() if now is None else now):
            return None
        return found


TICKETS = web.AppKey("tickets", Tickets)


# -- authentication -------------------------------------------------------------------------------------


_NEEDS_TOKEN = _("missing bearer token (POST /v1/auth/login, then Authorization: Bearer <token>)")


async def authenticate(request: web.BaseRequest, *, ws: bool = False) -> tuple[Account, float]:
    """The account a request acts for, and when its authority expires. Ordinary endpoints take
    the token from the ``Authorization`` header only; WebSocket upgrades also take a ticket."""
    book: AccountBook = request.app[BOOK]
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        token = header[7:].strip()
    elif ws and "ticket" in request.query:
        found = request.app[TICKETS].redeem(request.query["ticket"])
        if found is None:
            raise HTTPError(401, _("invalid, used or expired ticket (POST /v1/auth/ws-ticket for a new one)"), "bad_ticket")
        account = await book.get(found.name)
        if account is None or account.disabled or account.generation != found.generation:
            raise HTTPError(401, _("ticket no longer valid (account removed, disabled or password changed)"), "token_revoked")
        return account, found.token_expires
    elif "token" in request.query:
        raise HTTPError(401, _("tokens are accepted only in the Authorization header (a URL ends up in logs); "
                               "a WebSocket takes ?ticket= from POST /v1/auth/ws-ticket"), "token_in_url")
    else:
        raise HTTPError(401, _NEEDS_TOKEN, "missing_token")
    if not token:
        raise HTTPError(401, _NEEDS_TOKEN, "missing_token")
    found_token = acct.read_token(request.app[SERVICE].token_key, token)  # type: ignore[attr-defined]
    if found_token is None:
        raise HTTPError(401, _("invalid or expired token"), "bad_token")
    name, generation, expires = found_token
    account = await book.get(name)
    if account is None or account.disabled or account.generation != generation:
        raise HTTPError(401, _("token no longer valid (account removed, disabled or password changed)"), "token_revoked")
    return account, expires


SCOPE = web.RequestKey("scope", Scope)
EXPIRES = web.RequestKey("expires", float)

# -- the gate -------------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ScopedHandler = Callable[[web.Request, Scope], Awaitable[web.StreamResponse]]
ACCESS_ATTR = "__fenliu_access__"


def gate(role: str = "agent", *, all_shops: bool = False, ws: bool = False) -> Callable[[ScopedHandler], Handler]:
    """Register a handler for accounts of at least ``role`` (and, with ``all_shops``, permitted
    every shop); it is called as ``handler(request, scope)``. ``ws`` lets a WebSocket upgrade
    authenticate with a ticket; the token's expiry is ``request[EXPIRES]`` (a socket is closed then)."""

    def wrap(handler: ScopedHandler) -> Handler:
        async def gated(request: web.Request) -> web.StreamResponse:
            account, expires = await authenticate(request, ws=ws)
            scope = Scope(account, request.app[SERVICE].config)  # type: ignore[attr-defined]
            scope.require_role(role)
            if all_shops:
                scope.require_all_shops()
            request[SCOPE] = scope
            request[EXPIRES] = expires
            return await handler(request, scope)

        gated.__name__ = handler.__name__
        gated.__doc__ = handler.__doc__
        setattr(gated, ACCESS_ATTR, f"account:{role}" + (":all_shops" if all_shops else ""))
        return gated

    return wrap


def public(handler: Handler) -> Handler:
    """Register a handler anyone may call (it reveals nothing of any shop)."""
    setattr(handler, ACCESS_ATTR, "public")
    return handler


def signed(handler: Handler) -> Handler:
    """Register a handler a shop's bridge calls with the shop's HMAC (checked by the handler)."""
    setattr(handler, ACCESS_ATTR, "signed")
    return handler


def access_of(handler: Any) -> str | None:
    return getattr(handler, ACCESS_ATTR, None)


def check_routes(app: web.Application) -> None:
    """Refuse an app with a route that went around the gate."""
    bare = sorted({f"{r.method} {r.resource.canonical if r.resource else '?'}" for r in app.router.routes()
                   if access_of(r.handler) is None})
    if bare:
        raise RuntimeError(f"routes registered without access.gate/signed/public: {', '.join(bare)}")
