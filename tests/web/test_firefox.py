"""The workbench in Firefox (Debian's firefox-esr), driven over WebDriver BiDi — the W3C protocol
Firefox speaks natively — with a small client on aiohttp's WebSocket, since Playwright drives
only its own patched Firefox builds and those cannot be downloaded here.

It covers what differs between engines: the ES modules load, the login form works, the live
WebSocket delivers a conversation, accepting it reaches the server, and a forbidden reply is
stopped with the words highlighted. The full flows run in Chromium (test_browser.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import _apt_install
from tests.web.support import ARTIFACTS, Served, message

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.anyio]

FIREFOX = Path("/usr/bin/firefox-esr")


@pytest.fixture(scope="module")
def firefox_path() -> Path:
    if not FIREFOX.exists():
        if os.geteuid() != 0:
            pytest.skip("needs /usr/bin/firefox-esr (apt-get install -y firefox-esr, as root)")
        _apt_install("firefox-esr")
        if not FIREFOX.exists():
            pytest.skip("could not install firefox-esr with apt-get")
    return FIREFOX


class BiDi:
    """Just enough WebDriver BiDi: commands, and the log entries Firefox reports."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.logs: list[dict[str, Any]] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if data.get("type") == "event":
                if data["method"] == "log.entryAdded":
                    self.logs.append(data["params"])
                continue
            fut = self.pending.pop(data.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(data)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        reply = await asyncio.wait_for(fut, 30)
        assert reply["type"] == "success", reply
        return reply["result"]

    async def eval(self, context: str, expression: str) -> Any:
        result = await self.send("script.evaluate", expression=expression, target={"context": context},
                                 awaitPromise=True)
        assert result["type"] == "success", result
        return result["result"].get("value")

    async def until(self, context: str, expression: str, what: str, timeout: float = 20.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                value = await self.eval(context, expression)
                if value:
                    return value
                await asyncio.sleep(0.1)


@pytest.fixture
async def firefox(firefox_path, tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "user.js").write_text('user_pref("browser.shell.checkDefaultBrowser", false);\n'
                                     'user_pref("datareporting.policy.dataSubmissionEnabled", false);\n'
                                     'user_pref("intl.accept_languages", "zh-CN");\n')
    proc = subprocess.Popen([str(firefox_path), "--headless", "--no-remote", "--profile", str(profile),
                             "--remote-debugging-port", "0", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(60):
            while url is None:
                line = await loop.run_in_executor(None, proc.stderr.readline)  # type: ignore[union-attr]
                if not line:
                    raise AssertionError("firefox exited before it listened")
                if "WebDriver BiDi listening on" in line:
                    url = line.rsplit(" ", 1)[1].strip()
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url.rstrip("/") + "/session")
            bidi = BiDi(ws)
            await bidi.send("session.new", capabilities={})
            await bidi.send("session.subscribe", events=["log.entryAdded"])
            yield bidi
            bidi.reader.cancel()
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def served(tmp_path):
    server = Served(tmp_path / "srv", accept_timeout_s=600)
    yield from server.serving()


async def test_workbench_works_in_firefox(firefox, served):
    tree = await firefox.send("browsingContext.getTree")
    ctx = tree["contexts"][0]["context"]
    await firefox.send("browsingContext.setViewport", context=ctx, viewport={"width": 1366, "height": 768})
    await firefox.send("browsingContext.navigate", context=ctx, url=f"{served.url}/", wait="complete")
    # the page's module (with its string catalogue) is ready when it enables the login button
    await firefox.until(ctx, "document.querySelector('#submit') && !document.querySelector('#submit').disabled", "the login form")
    await firefox.eval(ctx, """(() => {
        for (const [id, v] of [["main", "acme"], ["sub", "a01"], ["password", "pw-1234"]]) {
            const el = document.querySelector("#" + id);
            el.value = v;
            el.dispatchEvent(new Event("input", {bubbles: true}));
        }
        document.querySelector("#submit").click();
        return true;
    })()""")
    await firefox.until(ctx, "location.pathname.endsWith('workbench.html')", "the workbench")
    await firefox.until(ctx, "document.querySelector('#conn')?.textContent === '● 已连接'", "the live connection")

    served.post(message("ff-1", "b-ff", "这件羽绒服有XL码吗", buyer={"nick": "火狐买家"}))
    await firefox.until(ctx, "!!document.querySelector('.conv[data-id=\"pdd-a:b-ff\"]')", "the conversation")
    await firefox.until(ctx, "document.querySelector('#chat-title')?.textContent === '火狐买家'", "the chat")
    await firefox.eval(ctx, "document.querySelector('#accept').click(), true")
    token = served.token("acme:lead-a")
    served.wait_for(lambda: served.request("GET", "/v1/conversations/pdd-a:b-ff", token=token)[1].get("state") == "assigned",
                    what="the accept to reach the server")

    await firefox.until(ctx, "!document.querySelector('#draft').disabled", "the composer")
    await firefox.eval(ctx, """(() => {
        const d = document.querySelector("#draft");
        d.value = "亲，加我微信，给您发最好的优惠";
        d.dispatchEvent(new Event("input", {bubbles: true}));
        d.dispatchEvent(new KeyboardEvent("keydown", {key: "Enter", bubbles: true, cancelable: true}));
        return true;
    })()""")
    hits = await firefox.until(
        ctx, "Array.from(document.querySelectorAll('#blocked mark.hit')).map(m => m.textContent).join(',')",
        "the highlighted words")
    assert hits == "微信,最好"
    history = served.request("GET", "/v1/conversations/pdd-a:b-ff", token=token)[1]["history"]
    assert not [h for h in history if h["who"] == "agent"], "the forbidden reply was sent"

    shot = await firefox.send("browsingContext.captureScreenshot", context=ctx)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "firefox-workbench.png").write_bytes(base64.b64decode(shot["data"]))
    errors = [e for e in firefox.logs if e.get("level") == "error"]
    assert errors == [], errors
