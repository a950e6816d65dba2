"""The workbench and the dashboard as docs/images/ shows them, on a working scene with the shipped
alert thresholds (``[defaults]``: amber at 60 s / 5 queued, red at 150 s / 10): two agents with
full hands, two buyers queued, a reply stopped for its forbidden words. At 1366×768 and
1920×1080 no table is wider than its box and the queue chart's legend is inside its card.

Screenshots go to test-artifacts/, or to docs/images/ with ``FENLIU_DOCS_IMAGES=1``; that run also
waits the real 150 s for 即将超时 to fill, for dashboard-alerts.png.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.web.conftest import log_in
from tests.web.support import Served, message, shots
from tests.web.test_ui_polish import CLIPPED, CLIPPED_BOXES

pytestmark = [pytest.mark.browser, pytest.mark.slow]
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
WAIT = 15_000
expect.set_options(timeout=WAIT)
SIZES = ((1366, 768), (1920, 1080))

# Every legend or chart that reaches past its card's content box (an empty list: nothing cut).
CUT = """() => [...document.querySelectorAll('.box')].flatMap((box) => {
  const b = box.getBoundingClientRect();
  const cs = getComputedStyle(box);
  const bottom = b.bottom - parseFloat(cs.paddingBottom) - parseFloat(cs.borderBottomWidth);
  const right = b.right - parseFloat(cs.paddingRight) - parseFloat(cs.borderRightWidth);
  return [...box.querySelectorAll('.legend, .chart svg')].filter((el) => {
    const r = el.getBoundingClientRect();
    return r.bottom > bottom + 0.5 || r.right > right + 0.5;
  }).map((el) => `${box.querySelector('h2')?.textContent} ${el.id || el.parentElement.id}`);
})"""
# The charts redrawn to their cards' shape: the viewBox's proportions are the element's (text undistorted).
FITTED = """() => ['queue-chart', 'hour-chart'].every((id) => {
  const svg = document.querySelector(`#${id} svg`);
  if (!svg) return false;
  const v = svg.viewBox.baseVal;
  return Math.abs(v.height / v.width - svg.clientHeight / svg.clientWidth) < 0.01;
})"""

BUYERS = [  # (buyer, nick, first message, extra fields)
    ("b-100", "小王", "我的快递到哪了", {"order": {"order_id": "240101-88", "status": "shipped", "goods": "羽绒服", "amount": 399.0}}),
    ("b-101", "糖糖", "这件羽绒服有XL码吗", {}),
    ("b-102", "阿杰", "收到的衣服有破洞", {}),
    ("b-103", "可乐", "请问今天能发货吗", {}),
    ("b-104", "晨晨", "在吗，想问一下尺码", {}),
    ("b-105", "小鹿", "有优惠券吗", {}),
    ("b-106", "大海", "能开发票吗", {}),
    ("b-107", "果果", "我要退款，质量太差了", {}),
    ("b-108", "安安", "衣服掉毛怎么办", {}),
    ("b-109", "米粒", "能改地址吗", {}),
    ("b-110", "阿花", "还有黑色的吗", {}),
    ("b-111", "老李", "多久能到", {}),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = Served(tmp_path_factory.mktemp("docs"), accept_timeout_s=600)
    yield from server.serving()


@pytest.fixture(scope="module")
def scene(browser, served):
    """小美's workbench and the lead's dashboard over a working scene; both pages open."""
    errors: list[str] = []
    contexts = []

    def open_(sub: str, name: str):
        ctx, page = log_in(browser, served.url, "acme", sub, name, errors, timezone_id="Asia/Shanghai")
        contexts.append(ctx)
        return page

    mei, lin = open_("a01", "workbench.html"), open_("a02", "workbench.html")
    for page in (mei, lin):
        expect(page.locator("#conn")).to_have_text("● 已连接")
        page.click('.status-btn[data-status="online"]')
        expect(page.locator('.status-btn[data-status="online"]')).to_have_class(re.compile("active"))
    dash = open_("lead-a", "dashboard.html")
    expect(dash.locator("#feed-state")).to_have_text("● 实时")

    for i, (buyer, nick, text, extra) in enumerate(BUYERS):
        served.post(message(f"d-{i}", buyer, text, buyer={"nick": nick, "level": 2}, **extra))
    for page in (mei, lin):
        expect(page.locator(".conv:not(.readonly)")).to_have_count(5)
    dash.wait_for_function("() => { const d = window.fenliuDashboard.state.data; return d && d.totals.queued === 2; }")

    # 小林 answers two buyers; 小美 answers 小王 with a quick reply, marks him VIP, and has a reply stopped
    for cid in [c.get_attribute("data-id") for c in lin.locator(".conv:not(.readonly)").all()][:2]:
        lin.locator(f'.conv[data-id="{cid}"]').click()
        if lin.locator("#accept-bar").is_visible():
            lin.click("#accept")
        expect(lin.locator("#draft")).to_be_enabled()
        lin.locator("#draft").fill("亲，在的，请问有什么可以帮您？")
        lin.locator("#draft").press("Enter")
        expect(lin.locator("#history .msg.agent")).to_have_count(1)
    wang = mei.locator('.conv[data-id="pdd-a:b-100"]')
    if wang.count():
        wang.click()
        expect(mei.locator("#chat-title")).to_have_text("小王")
        mei.click("#accept")
        expect(mei.locator("#draft")).to_be_enabled()
        mei.click('.side-tab[data-side="buyer"]')
        mei.click("#vip-btn")
        expect(mei.locator("#tags .tag.vip")).to_have_text("vip")
        mei.locator("#draft").fill("小王，已帮您查询订单240101-88的物流，预计明天送达~")
        mei.locator("#draft").press("Enter")
        expect(mei.locator("#history .msg.agent")).to_have_count(1)
        served.post(message("d-x", "b-100", "好的，麻烦快一点，急用"))
        expect(mei.locator("#history .msg.buyer").last).to_contain_text("急用")
        mei.locator("#draft").fill("亲，加我微信，给您发最好的优惠")
        mei.locator("#draft").press("Enter")
        expect(mei.locator("#blocked mark.hit")).to_have_text(["微信", "最好"])
    else:  # round robin gave 小王 to 小林: 小美 shows her first buyer
        mei.locator(".conv:not(.readonly)").first.click()
        expect(mei.locator("#chat-main")).to_be_visible()
    # the queue chart needs a few samples of the feed
    dash.wait_for_function("() => window.fenliuDashboard.state.depth.filter((p) => Object.values(p.q).some((n) => n > 0)).length >= 3")
    yield {"mei": mei, "lin": lin, "dash": dash}
    for ctx in contexts:
        ctx.close()
    assert errors == []


def _no_toasts(page) -> None:
    expect(page.locator("#toasts .toast")).to_have_count(0)


def test_the_pages_at_both_sizes(scene):
    mei, dash = scene["mei"], scene["dash"]
    for width, height in SIZES:
        suffix = "" if width == 1366 else f"-{width}"
        for page in (mei, dash):
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_function(f"() => window.innerWidth === {width}")
        assert mei.evaluate(CLIPPED) == [], width
        _no_toasts(mei)
        mei.screenshot(path=str(shots() / f"workbench{suffix}.png"))
        expect(dash.locator("#queue-legend span")).not_to_have_count(0)
        dash.wait_for_function(FITTED)
        assert dash.evaluate(CLIPPED) == [], width
        assert dash.evaluate(CLIPPED_BOXES) == [], width
        assert dash.evaluate(CUT) == [], width
        _no_toasts(dash)
        dash.screenshot(path=str(shots() / f"dashboard{suffix}.png"))
    for page in (mei, dash):
        page.set_viewport_size({"width": 1366, "height": 768})


@pytest.mark.skipif(not os.environ.get("FENLIU_DOCS_IMAGES"),
                    reason="regenerates docs/images/dashboard-alerts.png (FENLIU_DOCS_IMAGES=1): waits 150 s in real time "
                           "for the shipped 即将超时 threshold; test_ui_polish.py checks the alerts with small thresholds")
def test_the_alerts_at_the_shipped_thresholds(scene):
    dash = scene["dash"]
    expect(dash.locator("#alerts tr[data-conversation]")).not_to_have_count(0, timeout=200_000)
    expect(dash.locator("#alerts td.lvl-red").first).to_be_visible()
    assert dash.evaluate(CLIPPED) == []
    assert dash.evaluate(CUT) == []
    _no_toasts(dash)
    dash.screenshot(path=str(shots() / "dashboard-alerts.png"))
