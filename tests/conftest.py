"""Shared fixtures. The ``fenliu_*`` fixtures come from ``router.testing`` (our pytest plugin)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
T0 = 1763880000.0  # 2025-11-23 14:40:00 Asia/Shanghai, inside business hours


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def demo_config() -> Path:
    return ROOT / "config"


def run_fenliu(*args: str, input: str | bytes | None = None, cwd: Path | None = None,
               env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real ``fenliu`` command line (as ``python -m router``)."""
    if isinstance(input, bytes):
        input = input.decode()
    full_env = {**os.environ, "PYTHONHASHSEED": "random", **(env or {})}
    return subprocess.run([sys.executable, "-m", "router", *args], input=input, capture_output=True,
                          text=True, cwd=cwd or ROOT, env=full_env, timeout=timeout)


@pytest.fixture
def fenliu():
    return run_fenliu
