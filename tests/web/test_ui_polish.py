"""Issue 16's polish of the pages, in Debian's Chromium at 1366×768: the dashboard's alerts
(即将超时 with a one-click move, amber/red queue and wait thresholds from ``[defaults]``), the
workbench's list sorting, folded queued items, 话术 search, the transfer dialog's default skill,
toasts clear of the chat, no clipped table, and the 中/EN switch.

Screenshots go to ``test-artifacts/`` (workbench-polish.png to docs/images/ with
``FENLIU_DOCS_IMAGES=1``); the pages at both sizes with the shipped thresholds are
test_docs_images.py's.
"""

from __future__ import annotations

import re

import pytest

from tests.web.support import ARTIFACTS, Served, message, shots

pytestmark = [pytest.mark.browser, pytest.mark.slow]
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
WAIT = 15_000
expect.set_options(timeout=WAIT)

# Thresholds small enough for a test: amber at 1 s / 1 queued, red at 3 s / 2 queued.
ALERTS = "wait_warn_s = 1\nwait_alert_s = 3\nqueue_warn = 1\nqueue_alarm = 2\n"

# Every table wider than its box at 1366×768 (an empty list means nothing is clipped).
CLIPPED = """() => [...document.querySelectorAll('table')]
  .filter((t) => t.offsetParent !== null && t.scrollWidth > t.clientWidth + 1)
  .map((t) => `${t.closest('[id]') ? t.closest('[id]').id : '?'} ${t.scrollWidth}>${t.clientWidth}`)"""
CLIPPED_BOXES = """() => [...document.querySelectorAll('table')].filter((t) => t.offsetParent !== null)
  .map((t) => t.parentElement).filter((p) => p.scrollWidth > p.clientWidth + 1)
  .map((p) => `${p.id || p.className} ${p.scrollWidth}>${p.clientWidth}`)"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = Served(tmp_path_factory.mktemp("polish"), accept_timeout_s=600)
    toml = server.cfg / "fenliu.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace("[defaults]\n", f"[defaults]\n{ALERTS}"), encoding="utf-8")
    yield from server.serving()


def _lead(served) -> str:
    return served.token("acme:lead-a")


def _conversation(served, cid: str) -> dict:
    status, body = served.request("GET", f"/v1/conversations/{cid}", token=_lead(served))
    return body if status == 200 else {}


def _set_status(served, aid: str, status: str) -> None:
    code, body = served.request("PUT", f"/v1/agents/{aid}/status", {"status": status}, token=_lead(served))
    assert code == 200, body


def test_dashboard_alerts_and_thresholds(served, open_page):
    ARTIFACTS.mkdir(exist_ok=True)
    dash = open_page("acme", "lead-a", "dashboard.html")
    expect(dash.locator("#feed-state")).to_have_text("● 实时")
    expect(dash.locator("#alerts td.empty")).to_be_visible()

    # Nobody online: two buyers queue; the queue's depth and its wait turn red (queue_alarm = 2).
    _set_status(served, "a-01", "offline")
    _set_status(served, "a-02", "offline")
    served.post([message("q-1", "b-500", "有优惠券吗"), message("q-2", "b-501", "能开发票吗")])
    depth = dash.locator('#queues tr[data-skill="presale"] td').nth(1)
    expect(depth).to_have_text("2")
    expect(depth).to_have_attribute("data-level", "lvl-red")
    expect(dash.locator('#queues tr[data-skill="presale"] td').nth(2)).to_have_class(re.compile("lvl-red"))
    expect(dash.locator('#alerts tr[data-conversation="pdd-a:b-500"]')).to_be_visible()

    # A reserved conversation nobody answers: listed under 即将超时 with a one-click move to the
    # agent who can take it; the click moves it, no dialog.
    _set_status(served, "a-01", "online")
    served.wait_for(lambda: _conversation(served, "pdd-a:b-500").get("agent_id") == "a-01", what="b-500 to a-01")
    _set_status(served, "a-02", "online")
    row = dash.locator('#alerts tr[data-conversation="pdd-a:b-500"]')
    button = row.locator("button.quick-move")
    expect(button).to_have_attribute("data-agent", "a-02")
    expect(row).to_contain_text("小美")
    expect(dash.locator('#conversations tr[data-conversation="pdd-a:b-500"]')).to_have_class(re.compile("alert-row"))
    expect(dash.locator("#alerts-count")).not_to_have_text("")
    dash.screenshot(path=str(ARTIFACTS / "dashboard-alerts-small-thresholds.png"))
    button.click()
    served.wait_for(lambda: _conversation(served, "pdd-a:b-500").get("agent_id") == "a-02", what="the one-click move")
    expect(dash.locator("#move-dialog")).to_be_hidden()
    expect(row).to_contain_text("小林")
    assert dash.evaluate(CLIPPED) == []
    assert dash.evaluate(CLIPPED_BOXES) == []

    # The move dialog offers the conversation's own skill group first.
    dash.locator('#conversations tr[data-conversation="pdd-a:b-501"] button.move').click()
    skill = _conversation(served, "pdd-a:b-501")["skill"]
    expect(dash.locator("#move-skill")).to_have_value(skill)
    dash.keyboard.press("Escape")
    for aid in ("a-01", "a-02"):
        _set_status(served, aid, "offline")


def test_workbench_sorting_search_folding_and_layout(served, open_page):
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_page("acme", "b01", "workbench.html")
    expect(page.locator("#conn")).to_have_text("● 已连接")

    # Two held conversations; 按最新消息 puts the one written to last on top, 按店铺/按等待 keep both.
    served.post([message("s-1", "b-600", "我的快递到哪了", shop="tb-b", buyer={"nick": "早"})], shop="tb-b")
    expect(page.locator('.conv[data-id="tb-b:b-600"]')).to_be_visible()
    served.post([message("s-2", "b-601", "这个有货吗", shop="tb-b", buyer={"nick": "晚"})], shop="tb-b")
    expect(page.locator(".conv")).to_have_count(2)
    page.select_option("#conv-sort", "last")
    expect(page.locator(".conv").first).to_have_attribute("data-id", "tb-b:b-601")
    served.post([message("s-3", "b-600", "在吗", shop="tb-b")], shop="tb-b")
    expect(page.locator(".conv").first).to_have_attribute("data-id", "tb-b:b-600")
    assert page.evaluate("localStorage.getItem('fenliu.sort')") == "last"
    page.select_option("#conv-sort", "wait")

    # The transfer dialog defaults to the conversation's own skill group.
    page.locator('.conv[data-id="tb-b:b-600"]').click()
    expect(page.locator("#chat-title")).to_have_text("早")
    if page.locator("#accept-bar").is_visible():
        page.click("#accept")
    expect(page.locator("#draft")).to_be_enabled()
    skill = _conversation_admin(served, "tb-b:b-600")["skill"]
    assert skill
    page.click("#transfer-btn")
    expect(page.locator("#transfer-skill")).to_have_value(skill)
    page.keyboard.press("Escape")
    expect(page.locator("#transfer-dialog")).to_be_hidden()

    # 话术库 search.
    page.click('.side-tab[data-side="quick"]')
    expect(page.locator("#quick .quick-item")).not_to_have_count(0)
    page.fill("#quick-search", "物流")
    expect(page.locator("#quick .quick-item")).to_have_count(1)
    expect(page.locator('#quick .quick-item[data-id="q-track"]')).to_be_visible()
    page.fill("#quick-search", "没有这个词")
    expect(page.locator("#quick .quick-item")).to_have_count(0)
    expect(page.locator("#quick .empty")).to_be_visible()
    page.fill("#quick-search", "")
    expect(page.locator("#quick .quick-item")).not_to_have_count(1)

    # Toasts stay off the chat.
    page.evaluate("import('/web/common.js').then((m) => { for (let i = 0; i < 3; i++) m.toast('测试提示 ' + i); })")
    expect(page.locator("#toasts .toast")).to_have_count(3)
    assert page.evaluate("""() => { const a = document.getElementById('toasts').getBoundingClientRect();
        const b = document.getElementById('chat').getBoundingClientRect();
        return a.right <= b.left || a.left >= b.right || a.bottom <= b.top || a.top >= b.bottom; }""")

    # Hundreds of read-only queued items do not flood 全部: 20 show, the rest fold into a count.
    page.click('.status-btn[data-status="break"]')
    served.wait_for(lambda: _agent_status(served, "b-01") == "break", what="b-01 on break")
    served.post([message(f"f-{i}", f"b-7{i:02d}", "请问有货吗", shop="tb-b") for i in range(26)], shop="tb-b")
    more = page.locator("#conv-more")
    expect(more).to_have_attribute("data-folded", "6", timeout=30_000)
    expect(page.locator(".conv.readonly")).to_have_count(20)
    page.screenshot(path=str(shots() / "workbench-polish.png"))
    more.locator("button").click()
    expect(page.locator(".conv.readonly")).to_have_count(26)
    more.locator("button").click()
    expect(page.locator(".conv.readonly")).to_have_count(20)

    for pane in ("chat", "orders", "aftersale", "data", "settings"):
        page.click(f'.nav[data-pane="{pane}"]')
        assert page.evaluate(CLIPPED) == [], pane
    page.click('.nav[data-pane="chat"]')
    page.click('.status-btn[data-status="online"]')


def test_language_switch_and_browser_language(served, open_page):
    page = open_page("acme", "a01", "workbench.html")
    expect(page.locator("#transfer-btn")).to_have_text("转接")
    expect(page.locator("#lang-toggle")).to_have_text("EN")
    page.click("#lang-toggle")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#conn")).to_have_text("● Connected")
    expect(page.locator('.filter[data-filter="all"] [data-i18n]')).to_have_text("All")
    expect(page.locator("#draft")).to_have_attribute("placeholder", re.compile("^Type a reply"))
    expect(page.locator("#lang-toggle")).to_have_text("中文")
    page.click("#lang-toggle")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("#conn")).to_have_text("● 已连接")

    # A browser set to English gets English without touching the switch; the dashboard too.
    dash = open_page("acme", "lead-a", "dashboard.html", locale="en-US")
    expect(dash.locator("html")).to_have_attribute("lang", "en")
    expect(dash.locator("#feed-state")).to_have_text("● Live")
    expect(dash.locator('[data-kpi="reply-rate"] span')).to_have_text("3-minute reply rate today")
    assert not re.search(r"[\u4e00-\u9fff]", dash.locator("#move-dialog").inner_html())


def _conversation_admin(served, cid: str) -> dict:
    status, body = served.request("GET", f"/v1/conversations/{cid}", token=served.token("acme"))
    return body if status == 200 else {}


def _agent_status(served, aid: str) -> str:
    _, body = served.request("GET", "/v1/agents", token=served.token("acme"))
    return next(a for a in body["agents"] if a["id"] == aid)["status"]
