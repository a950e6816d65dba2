"""Shared fixtures. The ``fenliu_*`` fixtures come from ``router.tools.testing`` (our pytest plugin)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
T0 = 1763880000.0  # 2025-11-23 14:40:00 Asia/Shanghai, inside business hours
CHROMIUM = Path("/usr/bin/chromium")
# The suite asserts the English message ids; the default language (zh-CN) is tested in
# tests/router/core/test_i18n.py, and the browser tests ask for zh-CN with their locale (Accept-Language).
os.environ["FENLIU_LANG"] = "en"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


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


def _apt_install(*packages: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *packages]
    if subprocess.run(install, capture_output=True, env=env, timeout=600, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600, check=False)
        subprocess.run(install, capture_output=True, env=env, timeout=600, check=False)


def _has_cjk_font() -> bool:
    try:
        out = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return bool(out.strip())


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Debian's Chromium for Playwright (never ``playwright install``). As root, installs it with
    apt-get when missing, and a CJK font so screenshots show Chinese text; otherwise skips."""
    if not CHROMIUM.exists():
        if os.geteuid() != 0:
            pytest.skip("needs /usr/bin/chromium (apt-get install -y chromium, as root)")
        _apt_install("chromium")
        if not CHROMIUM.exists():
            pytest.skip("could not install chromium with apt-get")
    if not _has_cjk_font() and os.geteuid() == 0:
        _apt_install("fonts-noto-cjk")
    return CHROMIUM
