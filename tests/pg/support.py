"""Pieces of the multi-instance PostgreSQL tests: a configuration with ``records = "postgres"``
and every shop replying to a fake platform endpoint that counts deliveries, accounts created once
with the real ``fenliu accounts`` command."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from tests.conftest import run_fenliu
from tests.redis.support import write_config

PG_PASSWORD = "pg-only-pw"  # not the per-instance SQLite files' password: a login proves PostgreSQL


def write_pg_config(root: Path, prefix: str, pg_url: str, callback: str, *, shops: list[str], agents: list[str],
                    shards: int, cap: int) -> Path:
    cfg = write_config(root, prefix, shops={s: "FENLIU_TEST_SECRET_A" for s in shops},
                       agents=[{"id": a, "shops": ["*"], "cap": cap} for a in agents], shards=shards)
    main = (cfg / "fenliu.toml").read_text(encoding="utf-8")
    main = main.replace("[storage]\n", f'[storage]\nrecords = "postgres"\npostgres_url = "{pg_url}"\n', 1)
    (cfg / "fenliu.toml").write_text(main, encoding="utf-8")
    (cfg / "shops.toml").write_text("".join(
        f'[[shops]]\nid = "{s}"\nplatform = "other"\nadapter = "bridge"\nsecret_env = "FENLIU_TEST_SECRET_A"\n'
        f'callback_url = "{callback}"\n\n' for s in shops), encoding="utf-8")
    return cfg


def add_accounts(cfg: Path, agents: list[str]) -> None:
    """``ops`` (admin) and ``ops:<agent>`` in PostgreSQL, through the command line, once."""
    for name, extra in [("ops", ["--role", "admin", "--shops", "*"]),
                        *((f"ops:{a}", ["--role", "agent", "--agent", a]) for a in agents)]:
        out = run_fenliu("accounts", "add", name, *extra, "--password-stdin", "--config", str(cfg),
                         input=PG_PASSWORD + "\n")
        assert out.returncode == 0, out.stderr


class Platform:
    """The shops' bridge: counts every reply delivery by ``reply_id`` (and when it came), and
    answers the lookup ``GET ?reply_id=N`` a sender makes before sending again a reply in doubt."""

    def __init__(self) -> None:
        self.deliveries: Counter[int] = Counter()
        self.first: dict[int, float] = {}
        self.bodies: dict[int, dict[str, Any]] = {}
        self.lookups = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _reply(self, request: web.Request) -> web.Response:
        import time

        body = msgspec.json.decode(await request.read())
        rid = body["reply_id"]
        self.deliveries[rid] += 1
        self.first.setdefault(rid, time.time())
        self.bodies[rid] = body
        return web.json_response({"ok": True})

    async def _lookup(self, request: web.Request) -> web.Response:
        self.lookups += 1
        return web.json_response({"delivered": int(request.query["reply_id"]) in self.deliveries})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/replies", self._reply)
        app.router.add_get("/replies", self._lookup)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/replies"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def next_frame(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 15.0, **match: object) -> dict:
    """The next frame of ``kind`` matching ``match`` on a raw socket; frames before it are passed over."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
            frame = json.loads(msg.data)
            if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                return frame


async def request(ws: aiohttp.ClientWebSocketResponse, frame: dict, ref: str) -> dict:
    """Send ``frame`` with ``ref`` and wait for its ``result``."""
    await ws.send_json({**frame, "ref": ref})
    return await next_frame(ws, "result", ref=ref)
