"""A configuration for the workbench tests and a real ``fenliu serve`` subprocess on a free
loopback port, with synchronous helpers (signed ingest, JSON calls) for the browser tests.

The configuration is the service tests' (tests/router/serve_support.py: shops ``pdd-a`` and
``tb-b``, agents ``a-01``/``a-02`` on ``pdd-a`` and ``b-01`` on ``tb-b``, the same accounts) with
the real bot (welcome, 话术库), sensitive-word and VIP plugins switched on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from router.core.signing import SIGNATURE_HEADER, sign
from tests.router.serve_support import (
    ENV,
    PASSWORD,
    SECRET_A,
    SECRET_B,
    add_accounts,
    free_port,
)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
IMAGES = ROOT / "docs" / "images"


def shots() -> Path:
    """Where the pages' screenshots go: ``docs/images/`` when regenerating the docs
    (``FENLIU_DOCS_IMAGES=1``), else ``test-artifacts/``, so a test run leaves the docs alone."""
    out = IMAGES if os.environ.get("FENLIU_DOCS_IMAGES") else ARTIFACTS
    out.mkdir(parents=True, exist_ok=True)
    return out

QUICK_COMMON = """
group = "common"

[[quick]]
id = "q-hello"
title = "欢迎语"
keywords = ["你好"]
text = "{buyer}您好，我是{shop}的客服，很高兴为您服务~"

[[quick]]
id = "q-ship-time"
title = "发货时间"
keywords = ["发货"]
text = "{buyer}，您的{goods}今天16点前就会发出哦~"
"""

QUICK_SHIPPING = """
group = "shipping"

[[quick]]
id = "q-track"
title = "查询物流"
keywords = ["物流", "快递"]
text = "{buyer}，已帮您查询订单{order_id}的物流，预计明天送达~"
"""


def write_config(root: Path, *, accept_timeout_s: float = 60.0, grace_s: float = 30.0) -> Path:
    cfg = root / "config"
    (cfg / "policies").mkdir(parents=True, exist_ok=True)
    (cfg / "faq").mkdir(exist_ok=True)
    (cfg / "fenliu.toml").write_text(f"""
[server]
host = "127.0.0.1"
port = 0
reconnect_grace_s = {grace_s}
token_ttl_s = 3600

[storage]
path = "{root / 'fenliu.db'}"

[logging]
level = "warning"

[defaults]
reply_window = ["00:00", "24:00"]  # the tests run at any time of day
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
name = "小美"
skills = ["presale", "logistics", "aftersale"]
shops = ["pdd-a"]
max_concurrent = 5

[[agents]]
id = "a-02"
name = "小林"
skills = ["presale", "logistics", "aftersale"]
shops = ["pdd-a"]
max_concurrent = 5

[[agents]]
id = "b-01"
name = "晓雯"
skills = ["presale", "logistics", "aftersale"]
shops = ["tb-b"]
max_concurrent = 5
account = "acme:b01"
""", encoding="utf-8")
    (cfg / "policies" / "default.toml").write_text(f"""
[dispatch]
strategy = "round_robin"
default_skill = "presale"
sticky_hours = 0
accept_timeout_s = {accept_timeout_s}
on_agent_offline = "reroute"
targets = [{{ skills = ["@skill", "presale", "logistics", "aftersale"] }}]

[bot]
welcome = "{{buyer}}，您好！欢迎光临{{shop}}"
offline = ""
handoff_words = []
negative_words = []

[vip]
max_priority = 80

[vip.tags]
vip = 20

[sensitive]
patterns = []
lists = [
    {{ name = "contact", words = ["微信", "VX", "QQ", "支付宝"], inbound = "mask", outbound = "block", tag = "引流", advice = "平台内沟通" }},
    {{ name = "ad_law", words = ["最好", "第一"], inbound = "off", outbound = "block", tag = "广告法", advice = "很好" }},
]
""", encoding="utf-8")
    (cfg / "faq" / "common.toml").write_text(QUICK_COMMON, encoding="utf-8")
    (cfg / "faq" / "shipping.toml").write_text(QUICK_SHIPPING, encoding="utf-8")
    return cfg


def message(msg_id: str, buyer_id: str, text: str, shop: str = "pdd-a", **extra: Any) -> dict[str, Any]:
    return {"shop_id": shop, "msg_id": msg_id, "buyer_id": buyer_id, "text": text, **extra}


class Served:
    """``fenliu serve`` as a subprocess, plus blocking HTTP helpers."""

    def __init__(self, root: Path, **config: float) -> None:
        self.root = root
        self.cfg = write_config(root, **config)
        add_accounts(root / "fenliu.db")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.tokens: dict[str, str] = {}

    def start(self) -> None:
        env = {**os.environ, **ENV, "FENLIU_LOG_LEVEL": "error", "PYTHONUNBUFFERED": "1"}
        log = open(self.root / "serve.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([sys.executable, "-m", "router", "serve", "--config", str(self.cfg),
                                      "--port", str(self.port)], cwd=ROOT, env=env, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"fenliu serve exited: {(self.root / 'serve.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        raise AssertionError("fenliu serve did not become healthy")

    def serving(self) -> Iterator[Served]:
        """A fixture's body: ``yield from server.serving()`` starts it, hands it to the tests and
        stops it after them, however they end."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def request(self, method: str, path: str, body: Any = None, token: str | None = None,
                headers: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def token(self, account: str) -> str:
        if account not in self.tokens:
            status, body = self.request("POST", "/v1/auth/login", {"account": account, "password": PASSWORD})
            assert status == 200, body
            self.tokens[account] = body["token"]
        return self.tokens[account]

    def post(self, payload: Any, shop: str = "pdd-a") -> dict[str, Any]:
        raw = json.dumps(payload, ensure_ascii=False).encode()
        secret = {"pdd-a": SECRET_A, "tb-b": SECRET_B}[shop].encode()
        status, body = self.request("POST", f"/v1/shops/{shop}/messages", raw=raw,
                                    headers={SIGNATURE_HEADER: sign(secret, raw)})
        assert status == 202, body
        return body

    def wait_for(self, check, timeout: float = 15.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)
