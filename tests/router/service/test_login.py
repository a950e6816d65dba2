"""Logins under attack (issue 15): argon2 in a bounded pool outside every store transaction,
per-account and per-address lockouts that grow, bounded tracking tables, and the load test —
500 concurrent wrong-password logins while signed ingest goes on."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from argon2 import PasswordHasher
from hypothesis import given, settings
from hypothesis import strategies as st

from router.storage import accounts as acct
from router.service.login import Limiter
from router.service.accounts_api import LOGIN
from router.service.server import Server
from router.storage.store import Store
from tests.router.serve_support import ENV, PASSWORD, Client, add_accounts, message, start_server, write_config

LOGIN_PATH = "/v1/auth/login"


# -- the limiter: pure state, checked as a property -----------------------------------------------


def test_lockouts_double_up_to_the_cap_and_a_quiet_key_is_forgotten():
    lim = Limiter(max_failures=5, lockout_s=60, lockout_max_s=3600, size=100)
    now, lengths = 0.0, []
    for _ in range(8):
        got = [lim.fail("acme", now) for _ in range(5)]
        assert got[:4] == [0, 0, 0, 0]
        lengths.append(got[4])
        assert lim.remaining("acme", now) == got[4]
        assert lim.fail("acme", now + 1) == 0  # failures while locked do not count again
        now += got[4]
        assert lim.remaining("acme", now) == 0
    assert lengths == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    lim.fail("acme", now)
    assert "acme" in lim.table
    assert lim.remaining("acme", now + 3600) == 0 and "acme" not in lim.table  # quiet for the cap: forgotten
    assert [lim.fail("acme", now + 3600) for _ in range(5)][-1] == 60  # the doubling starts again
    lim.reset("acme")
    assert lim.remaining("acme", now + 3600) == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.floats(0, 500), st.booleans()), max_size=300),
       st.integers(1, 16), st.integers(1, 6))
def test_limiter_invariants(ops, size, max_failures):
    """Any sequence of failures and resets over any keys: the table never holds more than its
    bound; a lockout is never longer than the cap; a locked key counts no failure; each lockout
    of a key follows exactly ``max_failures`` counted failures."""
    lim = Limiter(max_failures=max_failures, lockout_s=10, lockout_max_s=100, size=size)
    now = 0.0
    for key_n, dt, reset in ops:
        now += dt
        key = f"k{key_n}"
        if reset:
            lim.reset(key)
            assert lim.remaining(key, now) == 0
            continue
        was_locked = lim.remaining(key, now) > 0
        before = lim.table[key].failures if key in lim.table else 0
        length = lim.fail(key, now)
        assert len(lim.table) <= size
        assert 0 <= lim.remaining(key, now) <= 100
        if was_locked:
            assert length == 0
        elif length:
            assert before == max_failures - 1
            assert length in (10, 20, 40, 80, 100) and lim.remaining(key, now) == pytest.approx(length, abs=1e-6)  # now + length - now
        else:
            assert lim.table[key].failures == before + 1


def test_a_flood_of_guessed_names_stays_bounded():
    lim = Limiter(max_failures=5, lockout_s=60, lockout_max_s=3600, size=1000)
    for i in range(20_000):
        lim.fail(f"ghost-{i}", float(i))
    assert len(lim.table) == 1000


# -- through the HTTP service, real argon2 ------------------------------------------------------------


def _config(root: Path, **server: object) -> Path:
    cfg = write_config(root)
    toml = cfg / "fenliu.toml"
    extra = "".join(f"{k} = {v}\n" for k, v in server.items())
    toml.write_text(toml.read_text(encoding="utf-8").replace("[server]\n", "[server]\n" + extra, 1), encoding="utf-8")
    return cfg


class _Clock:
    """The guard's clock, moved forward by the test instead of sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def _clock(server: Server) -> _Clock:
    clock = _Clock()
    server.runner.app[LOGIN].now = clock
    return clock


async def _login(http: aiohttp.ClientSession, url: str, account: str, password: str) -> tuple[int, dict, str | None]:
    async with http.post(url + LOGIN_PATH, json={"account": account, "password": password}) as r:
        return r.status, await r.json(), r.headers.get("Retry-After")


async def _metric(http: aiohttp.ClientSession, url: str, line_start: str) -> float:
    async with http.get(url + "/metrics") as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


@pytest.mark.anyio
async def test_wrong_passwords_lock_the_account_out_and_the_right_one_works_after(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = _config(tmp_path)
    add_accounts(tmp_path / "fenliu.db")
    server = await start_server(cfg)
    clock = _clock(server)
    try:
        async with aiohttp.ClientSession() as http:
            url = server.url
            for _ in range(4):
                assert (await _login(http, url, "acme", "wrong"))[0] == 401
            status, body, retry = await _login(http, url, "acme", "wrong")  # the fifth: locked out from now
            assert status == 429 and body["error"] == "locked_out" and retry == "60", body
            status, body, retry = await _login(http, url, "acme", PASSWORD)  # even the right password
            assert status == 429 and body["error"] == "locked_out" and "retry in 60 s" in body["message"]
            assert await _metric(http, url, "fenliu_login_failures_total") == 5
            assert await _metric(http, url, 'fenliu_login_lockouts_total{scope="account"}') == 1
            assert await _metric(http, url, 'fenliu_login_lockouts_total{scope="client"}') == 1
            assert await _metric(http, url, 'fenliu_logins_refused_total{reason="locked_out"}') >= 2

            clock.offset += 61
            status, body, _ = await _login(http, url, "acme", PASSWORD)
            assert status == 200 and body["account"] == "acme"
            # The account's count was reset by the login; the address's was not (a valid login
            # must not wash an attacker's address clean), so its next lockout is twice as long.
            for _ in range(4):
                assert (await _login(http, url, "acme:a01", "wrong"))[0] == 401
            status, body, retry = await _login(http, url, "acme:a01", "wrong")
            assert status == 429 and retry == "120", body
            assert await _metric(http, url, 'fenliu_login_lockouts_total{scope="client"}') == 2
            assert await _metric(http, url, 'fenliu_login_lockouts_total{scope="account"}') == 2
            status, body = await Client(url, http).call("POST", LOGIN_PATH, json={"account": "x" * 201, "password": "p"})
            assert status == 400 and body["error"] == "bad_request"
    finally:
        await server.stop()


@pytest.mark.anyio
async def test_an_old_hash_is_upgraded_in_a_short_store_job(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = _config(tmp_path)
    store = Store(tmp_path / "fenliu.db")
    store.run_sync(lambda c: acct.add(c, "acme", "old-params", "admin", ("*",)))
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("old-params")
    store.run_sync(lambda c: c.execute("UPDATE accounts SET password_hash = ? WHERE name = 'acme'", (weak,)))
    store.close_sync()
    server = await start_server(cfg)
    try:
        async with aiohttp.ClientSession() as http:
            assert (await Client(server.url, http).login("acme", "old-params"))
            stored = await server.service.store.call(
                lambda c: c.execute("SELECT password_hash FROM accounts WHERE name = 'acme'").fetchone()[0])
            assert stored != weak and not PasswordHasher().check_needs_rehash(stored)
            assert (await Client(server.url, http).login("acme", "old-params"))  # and it still opens
    finally:
        await server.stop()


@pytest.mark.anyio
async def test_500_wrong_logins_while_signed_ingest_goes_on(tmp_path, monkeypatch):
    """Done-when of issue 15: 500 concurrent wrong-password logins (known and unknown names)
    while signed ingest continues: every ingest answers 202, ``/healthz`` stays ok, the flood
    is refused (busy or locked out) rather than queued, and the right password works once the
    lockout ends."""
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = _config(tmp_path)
    add_accounts(tmp_path / "fenliu.db")
    server = await start_server(cfg)
    clock = _clock(server)
    names = ["acme", "acme:a01", "acme:lead-a"] + [f"ghost-{i}" for i in range(40)]
    flood_done = asyncio.Event()
    ingest_statuses: Counter[int] = Counter()
    health: Counter[tuple[int, str]] = Counter()
    try:
        async with (aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=600)) as flood,
                    aiohttp.ClientSession() as http):
            client = Client(server.url, http)

            async def ingest() -> None:
                i = 0
                while not flood_done.is_set() or i < 5:
                    status, _ = await client.post_messages("pdd-a", message(f"load-{i}", buyer_id=f"b-{i % 20}"))
                    ingest_statuses[status] += 1
                    async with http.get(server.url + "/healthz") as r:
                        health[(r.status, (await r.json())["status"])] += 1
                    i += 1
                    await asyncio.sleep(0.02)

            async def wrong(i: int) -> tuple[int, str, str | None]:
                status, body, retry = await _login(flood, server.url, names[i % len(names)], f"guess-{i}")
                return status, body["error"], retry

            feeder = asyncio.create_task(ingest())
            try:
                results = await asyncio.gather(*(wrong(i) for i in range(500)))
            finally:
                flood_done.set()
                await feeder

            outcomes = Counter((s, e) for s, e, _ in results)
            print("login outcomes:", dict(outcomes), "ingest:", dict(ingest_statuses), "healthz:", dict(health))
            assert set(outcomes) <= {(401, "unauthorized"), (429, "login_busy"), (429, "locked_out")}, outcomes
            assert outcomes[(429, "login_busy")] + outcomes[(429, "locked_out")] >= 480  # refused, not queued
            assert outcomes[(429, "locked_out")] > 0
            assert all(retry and int(retry) >= 1 for s, _, retry in results if s == 429)
            assert set(ingest_statuses) == {202} and sum(ingest_statuses.values()) >= 5
            assert set(health) == {(200, "ok")}
            assert await _metric(http, server.url, 'fenliu_logins_refused_total{reason="busy"}') > 0
            failures = await _metric(http, server.url, "fenliu_login_failures_total")
            assert failures >= 5  # hashes checked and failed: a handful, not 500

            # A second wave from the locked-out address: every one refused before any hash is checked.
            again = await asyncio.gather(*(wrong(i) for i in range(100)))
            assert Counter((s, e) for s, e, _ in again) == {(429, "locked_out"): 100}
            assert await _metric(http, server.url, "fenliu_login_failures_total") == failures

            status, body, _ = await _login(http, server.url, "acme", PASSWORD)
            assert status == 429 and body["error"] == "locked_out"  # this address is locked out
            clock.offset += 61
            token = await client.login("acme", PASSWORD)
            assert (await client.call("GET", "/v1/agents", token))[0] == 200
    finally:
        await server.stop()
