"""Accounts (主账号 / 子账号), roles, shop permissions and bearer tokens.

A main account (``"acme"``) owns sub-accounts named ``"acme:小美"``, as on the platforms'
workbenches where a sub-account logs in with the main account's id plus its own name. Roles:

- ``agent``: works conversations as one agent (``agent_id``, or the agent whose ``account`` in
  agents.toml is this account); sees only its permitted shops;
- ``supervisor``: sees and moves every conversation of its shops, sets agents' status, edits
  buyer profiles;
- ``admin``: everything, including reloading the configuration.

Passwords are argon2id hashes (argon2-cffi). Tokens are HMAC-SHA256-signed
``name.generation.expiry`` triples with a key kept in the store, so they survive restarts without
a token table, expire after ``server.token_ttl_s``, and die when the password changes (the
generation moves).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Sequence
from typing import Literal

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from router.core import i18n
from router.storage.store import meta_get, meta_set

Role = Literal["agent", "supervisor", "admin"]
ROLES: tuple[str, ...] = ("agent", "supervisor", "admin")

_hasher = PasswordHasher()
# Verifying against this keeps the time of a login for an unknown name like that of a known one.
_DUMMY_HASH = _hasher.hash("fenliu-no-such-account")


class AccountError(ValueError):
    """A bad account operation (unknown account, bad role, shop outside the main account's)."""


class Account(msgspec.Struct):
    name: str
    role: Role
    shops: tuple[str, ...]
    main: str | None = None
    agent_id: str | None = None
    generation: int = 1
    disabled: bool = False

    def may_see_shop(self, shop_id: str) -> bool:
        return "*" in self.shops or shop_id in self.shops

    @property
    def is_supervisor(self) -> bool:
        return self.role in ("supervisor", "admin")


def _row(row: tuple) -> Account:
    name, main, role, shops, agent_id, generation, disabled = row
    return Account(name, role, tuple(json.loads(shops)), main, agent_id, generation, bool(disabled))


_COLS = "name, main, role, shops, agent_id, generation, disabled"


def get(conn: sqlite3.Connection, name: str) -> Account | None:
    row = conn.execute(f"SELECT {_COLS} FROM accounts WHERE name = ?", (name,)).fetchone()
    return _row(row) if row else None


def list_accounts(conn: sqlite3.Connection) -> list[Account]:
    return [_row(r) for r in conn.execute(f"SELECT {_COLS} FROM accounts ORDER BY name")]


def check_password_strength(password: str) -> None:
    if len(password) < 4:
        raise AccountError(i18n._("password must have at least 4 characters"))


def add(conn: sqlite3.Connection, name: str, password: str, role: str = "agent",
        shops: tuple[str, ...] | None = None, agent_id: str | None = None,
        agent_shops: Sequence[str] | None = None, *, require_agent: bool = False) -> Account:
    """Create an account. ``main:sub`` names a sub-account of ``main``, which must exist and
    whose shops bound the sub-account's. ``agent_shops``, the shops of the agent an agent
    account works as (``require_agent``: it must have one), bound its shops too and are its default: an agent's account never sees
    more than its agent serves, and a sub-account never silently inherits all shops (``*``)."""
    if not name or name.count(":") > 1 or name.startswith(":") or name.endswith(":"):
        raise AccountError(i18n._("bad account name {name!r}: use MAIN or MAIN:SUB", name=name))
    if role not in ROLES:
        raise AccountError(i18n._("bad role {role!r}: expected one of {roles}", role=role, roles=", ".join(ROLES)))
    check_password_strength(password)
    if get(conn, name) is not None:
        raise AccountError(i18n._("account {name!r} already exists", name=name))
    main = None
    owner_shops: tuple[str, ...] = ("*",)
    if ":" in name:
        main = name.split(":", 1)[0]
        owner = get(conn, main)
        if owner is None:
            raise AccountError(i18n._("main account {main!r} does not exist; create it first", main=main))
        owner_shops = owner.shops
    if require_agent and agent_shops is None:
        raise AccountError(i18n._("agent account {name!r} needs its agent: --agent AGENT_ID, or account = {name!r} on the "
                                  "agent in agents.toml", name=name))
    if role == "agent" and agent_shops is not None:
        if shops is None:
            shops = tuple(s for s in agent_shops if "*" in owner_shops or s in owner_shops)
            if not shops:
                raise AccountError(i18n._("agent {agent!r} serves no shop permitted to main account {main!r}",
                                          agent=agent_id, main=main))
        elif "*" in shops:
            raise AccountError(i18n._("an agent's account cannot have all shops (*): agent {agent!r} serves {shops}",
                                      agent=agent_id, shops=", ".join(agent_shops) or "-"))
        else:
            outside = [s for s in shops if s not in agent_shops]
            if outside:
                raise AccountError(i18n._("shops {shops} are not served by agent {agent!r} (it serves {served})",
                                          shops=", ".join(outside), agent=agent_id, served=", ".join(agent_shops) or "-"))
    if shops is None:
        if main is not None and "*" in owner_shops:
            raise AccountError(i18n._("give the shops of sub-account {name!r} (--shops); it does not inherit all shops "
                                      "(* must be said)", name=name))
        shops = owner_shops
    if "*" not in owner_shops:
        outside = [s for s in shops if s not in owner_shops]
        if outside:
            raise AccountError(i18n._("shops {shops} are not permitted to main account {main!r}",
                                      shops=", ".join(outside), main=main))
    if role == "agent" and not agent_id:
        agent_id = None
    conn.execute(
        "INSERT INTO accounts (name, main, role, shops, agent_id, password_hash, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (name, main, role, json.dumps(list(shops)), agent_id, _hasher.hash(password), time.time()),
    )
    account = get(conn, name)
    assert account is not None
    return account


def set_disabled(conn: sqlite3.Connection, name: str, disabled: bool) -> None:
    """Disable (or enable) an account: no login, and its tokens and open sockets stop working."""
    cur = conn.execute("UPDATE accounts SET disabled = ?, generation = generation + ? WHERE name = ?",
                       (int(disabled), int(disabled), name))
    if cur.rowcount == 0:
        raise AccountError(i18n._("no account {name!r}", name=name))


def remove(conn: sqlite3.Connection, name: str) -> None:
    """Remove an account (and, for a main account, its sub-accounts)."""
    cur = conn.execute("DELETE FROM accounts WHERE name = ? OR main = ?", (name, name))
    if cur.rowcount == 0:
        raise AccountError(i18n._("no account {name!r}", name=name))


def passwd(conn: sqlite3.Connection, name: str, password: str) -> None:
    """Set a new password; tokens issued before stop working."""
    check_password_strength(password)
    cur = conn.execute("UPDATE accounts SET password_hash = ?, generation = generation + 1 WHERE name = ?",
                       (_hasher.hash(password), name))
    if cur.rowcount == 0:
        raise AccountError(i18n._("no account {name!r}", name=name))


def lookup(conn: sqlite3.Connection, name: str) -> tuple[Account, str] | None:
    """The account and its password hash: a plain read, so a login can take it from a read-only
    connection and keep the slow hash check out of every store transaction."""
    row = conn.execute(f"SELECT {_COLS}, password_hash FROM accounts WHERE name = ?", (name,)).fetchone()
    return (_row(row[:-1]), row[-1]) if row else None


def check_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches the hash (argon2, ≈ 0.5 s of CPU on purpose: call it off the
    event loop and outside any transaction). ``None`` (no such account) checks against a dummy
    hash, so an unknown name costs as much as a known one."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_hash(password_hash: str, password: str) -> str | None:
    """A hash with today's argon2 parameters when ``password_hash`` (just verified) has older
    ones, else ``None``."""
    return _hasher.hash(password) if _hasher.check_needs_rehash(password_hash) else None


def store_rehash(conn: sqlite3.Connection, name: str, old_hash: str, new: str) -> None:
    """Replace the hash only if it is still the one verified: a password changed meanwhile wins."""
    conn.execute("UPDATE accounts SET password_hash = ? WHERE name = ? AND password_hash = ?", (new, name, old_hash))


def verify(conn: sqlite3.Connection, name: str, password: str) -> Account | None:
    """The account if the password matches, else ``None`` (same cost either way), all on
    ``conn``: for the command line and tests. The service goes through :mod:`router.service.login`,
    which runs these steps in a thread pool and never inside a store transaction."""
    found = lookup(conn, name)
    if not check_password(found[1] if found else None, password) or found is None:
        return None
    rehashed = new_hash(found[1], password)
    if rehashed is not None:
        store_rehash(conn, name, found[1], rehashed)
    return found[0]


def token_key(conn: sqlite3.Connection) -> bytes:
    """The signing key for tokens, created once per store."""
    key = meta_get(conn, "token_key")
    if key is None:
        key = secrets.token_hex(32)
        meta_set(conn, "token_key", key)
    return bytes.fromhex(key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(key: bytes, account: Account, ttl_s: float, now: float | None = None) -> tuple[str, float]:
    expires = (now if now is not None else time.time()) + ttl_s
    payload = _b64(json.dumps([account.name, account.generation, int(expires)], ensure_ascii=False).encode())
    sig = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{sig}", float(int(expires))


def read_token(key: bytes, token: str, now: float | None = None) -> tuple[str, int, float] | None:
    """``(account name, generation, expiry)`` for a valid unexpired token, else ``None`` — also
    for any text that is not a token at all (non-ASCII, undecodable, the wrong shape)."""
    if not token.isascii():
        return None
    payload, sep, sig = token.partition(".")
    if not sep:
        return None
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, sig):
        return None
    try:
        name, generation, expires = json.loads(_unb64(payload))
        generation, expires = int(generation), float(expires)
    except (ValueError, TypeError, OverflowError):
        return None
    if expires < (now if now is not None else time.time()):
        return None
    return str(name), generation, expires
