"""Browser fixtures shared by the Playwright tests: one Chromium per module, and pages logged in
through the real login form. Each test module defines its own ``served`` (the server it needs)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import BROWSER_ARGS

WAIT = 15_000


def _sync_api() -> Any:
    return pytest.importorskip("playwright.sync_api")


def log_in(browser: Any, url: str, main: str, sub: str, page_name: str, errors: list[str], *,
           locale: str = "zh-CN", width: int = 1366, height: int = 768, **context: Any) -> tuple[Any, Any]:
    """A new browser context and page, logged in as ``main:sub`` and on ``page_name``; page
    errors go to ``errors``."""
    sync_api = _sync_api()
    ctx = browser.new_context(viewport={"width": width, "height": height}, locale=locale, **context)
    page = ctx.new_page()
    page.set_default_timeout(WAIT)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{url}/")
    page.fill("#main", main)
    page.fill("#sub", sub)
    page.fill("#password", "pw-1234")
    page.click("#submit")
    sync_api.expect(page).to_have_url(re.compile(page_name), timeout=WAIT)
    return ctx, page


@pytest.fixture(scope="module")
def browser(chromium_path) -> Iterator[Any]:
    sync_api = _sync_api()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium_path), args=BROWSER_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def open_page(browser, served) -> Iterator[Callable[..., Any]]:
    """``open_page(main, sub, page_name, locale=…, width=…, height=…)``: a fresh context logged in
    through the login form; the test fails on any page error."""
    contexts = []
    errors: list[str] = []

    def open_(main: str, sub: str, page_name: str, **kw: Any) -> Any:
        ctx, page = log_in(browser, served.url, main, sub, page_name, errors, **kw)
        contexts.append(ctx)
        return page

    yield open_
    for ctx in contexts:
        ctx.close()
    assert errors == []
