"""Shared pieces for the service tests: a small deterministic config, a real server on a free
loopback port (in-process or as a subprocess), signed requests and WebSocket agents."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from router.storage import accounts as acct
from router.core.config import FenliuFile, load_config
from router.core.hookspecs import hookimpl
from router.core.models import FilterVerdict, Hit
from router.core.plugins import PluginSet
from router.service.server import Server
from router.core.signing import SIGNATURE_HEADER, sign
from router.storage.store import Store

ROOT = Path(__file__).resolve().parents[2]
SECRET_A = "secret-shop-a"
SECRET_B = "secret-shop-b"
ENV = {"FENLIU_TEST_SECRET_A": SECRET_A, "FENLIU_TEST_SECRET_B": SECRET_B}
PASSWORD = "pw-1234"


class NoWechat:
    """Stand-in outbound filter (the real sensitive-word plugin is tested on its own)."""

    __name__ = "no_wechat"

    @hookimpl
    def fenliu_outbound_filter(self, reply, ctx):
        i = reply.text.find("微信")
        if i < 0:
            return None
        return FilterVerdict("block", reason="reply leads the buyer off the platform",
                             hits=(Hit("微信", i, i + 2, "test"),))


def write_config(root: Path, *, accept_timeout_s: float = 30.0, grace_s: float = 30.0, queue_max: int = 10_000,
                 max_batch: int = 20, max_body: int = 4096, dedupe_window: int = 1_000_000,
                 snapshot_every: int = 100_000) -> Path:
    """Two shops (A: pdd-a, B: tb-b), three agents, no business hours or shifts (the tests run at
    any time of day), the built-in bot off so every message needs a human."""
    cfg = root / "config"
    (cfg / "policies").mkdir(parents=True, exist_ok=True)
    (cfg / "fenliu.toml").write_text(f"""
[server]
host = "127.0.0.1"
port = 0
max_body_bytes = {max_body}
max_batch = {max_batch}
ingest_queue_max = {queue_max}
dedupe_window = {dedupe_window}
reconnect_grace_s = {grace_s}
token_ttl_s = 3600

[storage]
path = "{root / 'fenliu.db'}"
snapshot_every = {snapshot_every}

[plugins]
disabled = ["bot", "sensitive"]

[logging]
level = "warning"
""", encoding="utf-8")
    (cfg / "shops.toml").write_text("""
[[shops]]
id = "pdd-a"
name = "暖冬羽绒旗舰店"
platform = "pinduoduo"
secret_env = "FENLIU_TEST_SECRET_A"

[[shops]]
id = "tb-b"
name = "潮流数码专营"
platform = "taobao"
secret_env = "FENLIU_TEST_SECRET_B"
""", encoding="utf-8")
    (cfg / "agents.toml").write_text("""
[[agents]]
id = "a-01"
skills = ["presale", "logistics", "aftersale", "vip"]
shops = ["pdd-a"]
max_concurrent = 5

[[agents]]
id = "a-02"
skills = ["presale", "logistics", "aftersale", "vip"]
shops = ["pdd-a"]
max_concurrent = 5

[[agents]]
id = "b-01"
skills = ["presale", "logistics", "aftersale", "vip"]
shops = ["tb-b"]
max_concurrent = 5
account = "acme:b01"
""", encoding="utf-8")
    (cfg / "policies" / "default.toml").write_text(f"""
[dispatch]
strategy = "round_robin"
sticky_hours = 0
accept_timeout_s = {accept_timeout_s}
on_agent_offline = "reroute"
targets = [{{ skills = ["@skill", "presale", "logistics", "aftersale"] }}]
""", encoding="utf-8")
    return cfg


_TEMPLATE: list[Path] = []


def add_accounts(db: Path) -> None:
    """The test accounts, hashed once per session (argon2 is slow on purpose) and copied."""
    import shutil
    import tempfile

    if not _TEMPLATE:
        template = Path(tempfile.mkdtemp(prefix="fenliu-accounts-")) / "accounts.db"
        store = Store(template)

        def create(conn: sqlite3.Connection) -> None:
            acct.add(conn, "acme", PASSWORD, "admin", ("*",))
            acct.add(conn, "acme:lead-a", PASSWORD, "supervisor", ("pdd-a",))
            acct.add(conn, "acme:a01", PASSWORD, "agent", ("pdd-a",), "a-01")
            acct.add(conn, "acme:a02", PASSWORD, "agent", ("pdd-a",), "a-02")
            acct.add(conn, "acme:b01", PASSWORD, "agent", ("tb-b",))

        store.run_sync(create)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.close_sync()
        _TEMPLATE.append(template)
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_TEMPLATE[0], db)


def load(cfg: Path, *plugins: object):
    import tomllib

    settings = msgspec.convert(tomllib.loads((cfg / "fenliu.toml").read_text()), FenliuFile).plugins
    return load_config(cfg, PluginSet.load(settings, extra=plugins))


async def start_server(cfg: Path, *plugins: object) -> Server:
    return await Server.start(load(cfg, *plugins), port=0)


def message(msg_id: str, buyer_id: str = "b-1", shop: str = "pdd-a", text: str = "在吗?这件羽绒服有XL码吗",
            **extra: Any) -> dict[str, Any]:
    return {"shop_id": shop, "msg_id": msg_id, "buyer_id": buyer_id, "text": text, **extra}


class Client:
    """An aiohttp client speaking to one server: signed ingest, login, JSON calls."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http

    async def post_messages(self, shop: str, payload: Any, secret: str | None = None,
                            raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        body = raw if raw is not None else msgspec.json.encode(payload)
        key = (secret if secret is not None else {"pdd-a": SECRET_A, "tb-b": SECRET_B}.get(shop, "x")).encode()
        async with self.http.post(f"{self.url}/v1/shops/{shop}/messages", data=body,
                                  headers={SIGNATURE_HEADER: sign(key, body), "Content-Type": "application/json",
                                           **(headers or {})}) as r:
            return r.status, await r.json()

    async def login(self, account: str, password: str = PASSWORD) -> str:
        async with self.http.post(f"{self.url}/v1/auth/login", json={"account": account, "password": password}) as r:
            body = await r.json()
            assert r.status == 200, body
            return body["token"]

    async def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, f"{self.url}{path}", headers=headers, **kw) as r:
            return r.status, await r.json()


class Agent:
    """A real WebSocket agent."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.backlog: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, client: Client, token: str) -> Agent:
        ws = await client.http.ws_connect(f"{client.url.replace('http', 'ws')}/v1/agents/ws", headers={"Authorization": f"Bearer {token}"})
        return cls(ws)

    async def next(self, type_: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The first frame of ``type_`` (matching ``match``) not yet taken, waiting for it."""
        def wanted(frame: dict[str, Any]) -> bool:
            return frame["type"] == type_ and all(frame.get(k) == v for k, v in match.items())

        for i, frame in enumerate(self.backlog):
            if wanted(frame):
                return self.backlog.pop(i)
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise AssertionError(f"socket ended: {msg.type} {msg.data!r}")
                frame = json.loads(msg.data)
                self.frames.append(frame)
                if wanted(frame):
                    return frame
                self.backlog.append(frame)

    async def request(self, frame: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        ref = f"r{len(self.frames)}-{id(frame)}"
        await self.ws.send_json({**frame, "ref": ref})
        return await self.next("result", timeout, ref=ref)

    async def close(self) -> None:
        await self.ws.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(cfg: Path, port: int) -> subprocess.Popen:
    """``fenliu serve`` as a real subprocess."""
    env = {**os.environ, **ENV, "FENLIU_LOG_LEVEL": "error", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "router", "serve", "--config", str(cfg), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
        while True:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                async with http.get(f"{url}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


def db_rows(db: Path, sql: str, *args: Any) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()
