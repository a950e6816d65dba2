"""智能辅助 in a real browser: the workbench offers the best FAQ answers and quick replies for the
buyer's latest message, filled for the buyer; a click or Alt+1..3 puts one in the composer and
nothing is sent without the agent. The bot's ``suggest`` mode leaves its answer as the draft."""

from __future__ import annotations


import pytest

from tests.web.conftest import log_in
from tests.web.support import Served, message

pytestmark = [pytest.mark.browser, pytest.mark.slow]
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
WAIT = 15_000
expect.set_options(timeout=WAIT)

FAQ = """
group = "assist"

[[faq]]
id = "ship-time"
keywords = ["几天发货"]
questions = ["下单后多久发货", "付款后几天能发出"]
answer = "{buyer}，现货商品付款后48小时内发货~"
mode = "suggest"

[[faq]]
id = "freight-insurance"
keywords = ["运费险"]
questions = ["退货运费谁出"]
answer = "{buyer}，本店商品都送运费险~"
"""
ANSWER = "小王，现货商品付款后48小时内发货~"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = Served(tmp_path_factory.mktemp("assist"), accept_timeout_s=600)
    (server.cfg / "faq" / "assist.toml").write_text(FAQ, encoding="utf-8")
    yield from server.serving()


@pytest.fixture(scope="module")
def page(browser, served):
    errors: list[str] = []
    ctx, pg = log_in(browser, served.url, "acme", "a01", "workbench.html", errors)
    yield pg
    ctx.close()
    assert errors == []


def agent_replies(served, cid: str) -> list[str]:
    status, body = served.request("GET", f"/v1/conversations/{cid}", token=served.token("acme:lead-a"))
    return [h["text"] for h in body.get("history", []) if h["who"] == "agent"] if status == 200 else []


def test_suggestions_for_the_buyers_message(served, page):
    expect(page.locator("#conn")).to_have_text("● 已连接")
    served.post(message("s-1", "b-200", "拍了之后大概几天能寄出来", buyer={"nick": "小王"}))
    expect(page.locator("#chat-title")).to_have_text("小王")
    # the bot's suggest mode: its answer waits in the composer, the assist bar offers it first
    first = page.locator("#assist .assist-item").first
    expect(first).to_have_attribute("data-id", "ship-time")
    expect(first).to_contain_text(ANSWER)
    expect(page.locator("#draft")).to_have_value(ANSWER)
    page.click("#accept")
    expect(page.locator("#draft")).to_be_enabled()
    assert agent_replies(served, "pdd-a:b-200") == []  # nothing is sent without the agent

    page.locator("#draft").fill("")
    page.locator("#draft").press("Alt+1")
    expect(page.locator("#draft")).to_have_value(ANSWER)

    # the next buyer message brings its own suggestions: an FAQ answer and a quick reply
    page.locator("#draft").fill("")
    served.post(message("s-2", "b-200", "退回去的邮费谁出，快递能查吗", buyer={"nick": "小王"}))
    expect(page.locator('#assist .assist-item[data-id="freight-insurance"]')).to_contain_text("小王，本店商品都送运费险~")
    expect(page.locator('#assist .assist-item[data-id="q-track"]')).to_be_visible()
    page.locator('#assist .assist-item[data-id="freight-insurance"]').click()
    expect(page.locator("#draft")).to_have_value("小王，本店商品都送运费险~")
    assert agent_replies(served, "pdd-a:b-200") == []
    page.locator("#draft").press("Enter")
    served.wait_for(lambda: agent_replies(served, "pdd-a:b-200") == ["小王，本店商品都送运费险~"], what="the agent's reply")
