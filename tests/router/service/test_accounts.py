"""Accounts: the ``fenliu accounts`` command, argon2 hashes, main/sub-account rules, tokens."""

from __future__ import annotations

import aiohttp
import pytest

from router.storage import accounts as acct
from router.service.access import BOOK
from router.storage.store import Store
from tests.router.serve_support import ENV, Client, start_server, write_config

pytestmark = pytest.mark.anyio


def test_cli_add_list_passwd(tmp_path, fenliu):
    cfg = write_config(tmp_path)
    db = tmp_path / "fenliu.db"
    r = fenliu("accounts", "--config", str(cfg), "add", "acme", "--password-stdin", input="boss-pass\n")
    assert r.returncode == 0, r.stderr
    assert "created acme (admin, shops *)" in r.stdout
    r = fenliu("accounts", "--config", str(cfg), "add", "acme:小美", "--shops", "pdd-a", "--agent", "a-01",
               "--password-stdin", input="mei-pass\n")
    assert r.returncode == 0, r.stderr
    r = fenliu("accounts", "--config", str(cfg), "add", "other:x", "--password-stdin", input="abcd\n")
    assert r.returncode == 1 and "main account 'other' does not exist" in r.stderr
    r = fenliu("accounts", "--config", str(cfg), "add", "acme:y", "--shops", "nope", "--password-stdin", input="abcd\n")
    assert r.returncode == 1 and "unknown shop 'nope'" in r.stderr
    r = fenliu("accounts", "--config", str(cfg), "add", "acme", "--password-stdin", input="abcd\n")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = fenliu("accounts", "--config", str(cfg), "list")
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["acme\tadmin\tshops=*", "acme:小美\tagent\tshops=pdd-a\tagent=a-01"]
    r = fenliu("accounts", "list", "--config", str(cfg))  # the options read the same after the action
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "acme\tadmin\tshops=*", r.stderr

    store = Store(db)
    try:
        hashed = store.conn.execute("SELECT password_hash FROM accounts WHERE name = 'acme'").fetchone()[0]
        assert hashed.startswith("$argon2id$") and "boss-pass" not in hashed
        assert store.run_sync(lambda c: acct.verify(c, "acme:小美", "mei-pass")).agent_id == "a-01"
        assert store.run_sync(lambda c: acct.verify(c, "acme:小美", "wrong")) is None
        assert store.run_sync(lambda c: acct.verify(c, "ghost", "mei-pass")) is None
    finally:
        store.close_sync()
    r = fenliu("accounts", "--config", str(cfg), "passwd", "acme:小美", "--password-stdin", input="new-pass\n")
    assert r.returncode == 0, r.stderr
    store = Store(db)
    try:
        assert store.run_sync(lambda c: acct.verify(c, "acme:小美", "new-pass")) is not None
        assert store.run_sync(lambda c: acct.verify(c, "acme:小美", "mei-pass")) is None
    finally:
        store.close_sync()


def test_cli_agent_accounts_stay_within_their_agents_shops(tmp_path, fenliu):
    cfg = write_config(tmp_path)

    def add(*args: str) -> tuple[int, str]:
        r = fenliu("accounts", "--config", str(cfg), "add", *args, "--password-stdin", input="abcd\n")
        return r.returncode, r.stdout + r.stderr

    assert add("acme")[0] == 0
    code, out = add("acme:x", "--shops", "tb-b", "--agent", "a-01")
    assert code == 1 and "tb-b are not served by agent 'a-01'" in out
    code, out = add("acme:x", "--shops", "*", "--agent", "a-01")
    assert code == 1 and "cannot have all shops" in out
    code, out = add("acme:x", "--agent", "a-01")  # no --shops: the agent's, never *
    assert code == 0 and "shops pdd-a" in out, out
    code, out = add("acme:b01")  # the agent is found through agents.toml's account
    assert code == 0 and "shops tb-b" in out, out
    code, out = add("acme:nobody")  # an agent account with no agent could never work
    assert code == 1 and "needs its agent" in out
    code, out = add("acme:lead", "--role", "supervisor")  # a sub-account does not inherit * silently
    assert code == 1 and "--shops" in out
    assert add("acme:lead", "--role", "supervisor", "--shops", "*")[0] == 0
    for action, expect in (("disable", "\tdisabled"), ("enable", "")):
        r = fenliu("accounts", "--config", str(cfg), action, "acme:x")
        assert r.returncode == 0, r.stderr
        line = next(x for x in fenliu("accounts", "--config", str(cfg), "list").stdout.splitlines() if x.startswith("acme:x\t"))
        assert line.endswith(expect) if expect else "disabled" not in line
    r = fenliu("accounts", "--config", str(cfg), "remove", "acme:x")
    assert r.returncode == 0
    assert "acme:x\t" not in fenliu("accounts", "--config", str(cfg), "list").stdout
    r = fenliu("accounts", "--config", str(cfg), "remove", "acme:x")
    assert r.returncode == 1 and "no account" in r.stderr


def test_demo_agent_accounts_see_only_their_agents_shops(tmp_path, demo_config):
    from router.service.access import agent_shops
    from router.core.config import load_config
    from router.service.server import ensure_demo

    config = load_config(demo_config)
    ensure_demo(config, str(tmp_path / "demo.db"))
    store = Store(tmp_path / "demo.db")
    try:
        for a in store.run_sync(acct.list_accounts):
            if a.role == "agent":
                assert "*" not in a.shops and set(a.shops) == set(agent_shops(config, a.agent_id)), a
    finally:
        store.close_sync()


def test_sub_account_shops_are_bounded_by_the_main_account(tmp_path):
    store = Store(tmp_path / "a.db")
    try:
        store.run_sync(lambda c: acct.add(c, "shopco", "pass1", "admin", ("pdd-a",)))
        with pytest.raises(acct.AccountError, match="not permitted"):
            store.run_sync(lambda c: acct.add(c, "shopco:x", "pass1", "agent", ("tb-b",)))
        sub = store.run_sync(lambda c: acct.add(c, "shopco:y", "pass1", "agent"))
        assert sub.shops == ("pdd-a",) and sub.main == "shopco"
        with pytest.raises(acct.AccountError, match="bad role"):
            store.run_sync(lambda c: acct.add(c, "z", "pass1", "boss"))
    finally:
        store.close_sync()


def test_tokens_are_signed_and_expire():
    key = b"k" * 32
    account = acct.Account("acme:a", "agent", ("pdd-a",))
    token, expires = acct.issue_token(key, account, 60, now=1000.0)
    assert acct.read_token(key, token, now=1030.0) == ("acme:a", 1, expires)
    assert acct.read_token(key, token, now=expires + 1) is None
    assert acct.read_token(b"x" * 32, token, now=1030.0) is None
    payload, sig = token.split(".")
    assert acct.read_token(key, payload[:-2] + "AA." + sig, now=1030.0) is None


async def test_login_and_password_change_revokes_tokens(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = write_config(tmp_path)
    store = Store(tmp_path / "fenliu.db")
    store.run_sync(lambda c: acct.add(c, "acme", "old-pass", "admin"))
    store.close_sync()
    server = await start_server(cfg)
    try:
        async with aiohttp.ClientSession() as http:
            c = Client(server.url, http)
            status, body = await c.call("POST", "/v1/auth/login", json={"account": "acme", "password": "nope"})
            assert status == 401 and body["message"] == "wrong account or password"
            status, body = await c.call("POST", "/v1/auth/login", data=b"{")
            assert status == 400
            token = await c.login("acme", "old-pass")
            assert (await c.call("GET", "/v1/agents", token))[0] == 200
            await server.service.store.call(lambda conn: acct.passwd(conn, "acme", "new-pass"))
            server.runner.app[BOOK].invalidate()
            status, body = await c.call("GET", "/v1/agents", token)
            assert status == 401 and "password changed" in body["message"]
            assert (await c.call("GET", "/v1/agents", await c.login("acme", "new-pass")))[0] == 200
    finally:
        await server.stop()
