"""Builders for small, explicit configurations, and a way to route JSONL through `fenliu route`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import T0, run_fenliu

BASE = """
[plugins]
enabled = ["tests.policies.tagging"]
disabled = ["sensitive", "bot", "skills", "vip"]
"""


def write_config(root: Path, shops: str, agents: str, policies: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "fenliu.toml").write_text(BASE, encoding="utf-8")
    (root / "shops.toml").write_text(shops, encoding="utf-8")
    (root / "agents.toml").write_text(agents, encoding="utf-8")
    (root / "policies").mkdir(exist_ok=True)
    for name, text in policies.items():
        (root / "policies" / f"{name}.toml").write_text(text, encoding="utf-8")
    return root


class Raw(str):
    """A TOML value written as is (inline tables)."""


def agents_toml(*agents: dict[str, Any]) -> str:
    out = []
    for a in agents:
        out.append("[[agents]]")
        for k, v in a.items():
            out.append(f"{k} = {v if isinstance(v, Raw) else json.dumps(v, ensure_ascii=False)}")
    return "\n".join(out) + "\n"


def msg(n: int, buyer_id: str, t: float, text: str = "在吗", shop: str = "s1", **kw: Any) -> dict[str, Any]:
    return {"shop_id": shop, "msg_id": f"m{n}", "buyer_id": buyer_id, "text": text, "ts": T0 + t, **kw}


def ev(kind: str, t: float, **kw: Any) -> dict[str, Any]:
    return {"type": kind, "ts": T0 + t, **kw}


class Routed:
    def __init__(self, stdout: str) -> None:
        self.decisions = [json.loads(x) for x in stdout.splitlines()]

    def of(self, msg_id: str) -> dict[str, Any]:
        return next(d for d in self.decisions if d["msg_id"] == msg_id)

    def agents(self) -> list[str | None]:
        return [d["agent_id"] for d in self.decisions]

    def brief(self) -> list[tuple[Any, ...]]:
        """(msg_id or conversation, action, agent, cause) for each decision."""
        return [(d["msg_id"] or d["conversation_id"], d["action"], d["agent_id"], d["cause"]) for d in self.decisions]


@pytest.fixture
def route():
    def run(config: Path, lines: list[dict[str, Any]], expect_rc: int = 0) -> Routed:
        text = "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n"
        r = run_fenliu("route", "--config", str(config), input=text)
        assert r.returncode == expect_rc, r.stderr
        assert "Traceback" not in r.stderr
        routed = Routed(r.stdout)
        routed.stderr = r.stderr  # type: ignore[attr-defined]
        return routed

    return run


ONE_SHOP = '[[shops]]\nid = "s1"\nplatform = "pinduoduo"\npolicy = "p"\n'


def policy(strategy: str = "round_robin", extra: str = "", targets: str = '[{ skills = ["@skill"] }]') -> str:
    return f'[dispatch]\nstrategy = "{strategy}"\ndefault_skill = "presale"\ntargets = {targets}\n{extra}\n'
