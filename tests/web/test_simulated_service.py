"""What `make run` shows a person: `fenliu serve --simulate` on the demo configuration, the
supervisor's dashboard filling up with the simulator's traffic in Chromium, and an agent who
logs in taking over from their simulated stand-in."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import BROWSER_ARGS, ROOT
from tests.web.support import ARTIFACTS, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture
def simulated(tmp_path):
    cfg = tmp_path / "config"
    shutil.copytree(ROOT / "config", cfg)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FENLIU_SECRET_")}
    env.update(FENLIU_LOG_LEVEL="error", PYTHONUNBUFFERED="1")
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "router", "serve", "--config", str(cfg), "--simulate", "--rate", "6",
                             "--port", str(port), "--store", str(tmp_path / "fenliu.db")],
                            cwd=tmp_path, env=env, stdout=log, stderr=log)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                break
        except OSError:
            assert time.monotonic() < deadline, "fenliu serve --simulate did not become healthy"
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_dashboard_moves_with_the_simulator_and_a_person_can_take_over(simulated, chromium_path):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium_path), args=BROWSER_ARGS)
        try:
            errors: list[str] = []
            page = browser.new_page(viewport={"width": 1366, "height": 768}, locale="zh-CN")
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.set_default_timeout(20_000)
            page.goto(f"{simulated}/")
            page.fill("#main", "demo")
            page.fill("#sub", "lead")
            page.fill("#password", "demo1234")
            page.click("#submit")
            expect(page).to_have_url(re.compile("dashboard.html"), timeout=20_000)
            expect(page.locator("#feed li").nth(4)).to_be_visible(timeout=30_000)
            expect(page.locator("#agents tr").first).to_be_visible()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "simulated-dashboard.png"))

            agent = browser.new_page(viewport={"width": 1366, "height": 768}, locale="zh-CN")
            agent.on("pageerror", lambda exc: errors.append(str(exc)))
            agent.goto(f"{simulated}/")
            agent.fill("#main", "demo")
            agent.fill("#sub", "a-06")
            agent.fill("#password", "demo1234")
            agent.click("#submit")
            expect(agent).to_have_url(re.compile("workbench.html"), timeout=20_000)
            expect(agent.locator("#conn")).to_have_text("● 已连接", timeout=20_000)
            expect(agent.locator(".conv").first).to_be_visible(timeout=45_000)
            agent.screenshot(path=str(ARTIFACTS / "simulated-workbench.png"))
            assert errors == []
        finally:
            browser.close()
