"""Issue 16's agent day in Debian's Chromium against a real ``fenliu serve``: a draft never follows
a transfer to the next buyer; images, voice, video and cards arrive untouched (a ``wxid_…`` in a
picture's address is not masked, the same words typed by the buyer are); the workbench's status
bar and the dashboard give the same figures; an agent outside their shift shows 排班外, is not
counted online, cannot be picked for a transfer or a move, and the dashboard says who comes next;
a conversation the buyer's silence ends disappears from the agent's list with a word why.
"""

from __future__ import annotations

import base64
import io
import re
import wave
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.web.conftest import log_in
from tests.web.support import Served, message

pytestmark = [pytest.mark.browser, pytest.mark.slow]
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
WAIT = 15_000
expect.set_options(timeout=WAIT)

SHANGHAI = ZoneInfo("Asia/Shanghai")
# the demo's pattern for WeChat ids (config/policies/default.toml), so the filter has something to mask
WECHAT = """patterns = [
    { name = "wechat_id", regex = '(?:微信|weixin|wechat|vx|wx|v信)(?:号|id)?[a-z][a-z0-9]{5,19}', requires = ["微信", "weixin", "wechat", "vx", "wx", "v信"], inbound = "mask", outbound = "block", tag = "引流" },
]"""
CDN = "https://img.fenliu.test"


def off_shift_window(now: datetime) -> tuple[str, str]:
    """An hour's shift starting three hours from now (Shanghai time): off shift now, next on at its start."""
    start = now + timedelta(hours=3)
    return start.strftime("%H:%M"), (start + timedelta(hours=1)).strftime("%H:%M")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = Served(tmp_path_factory.mktemp("workday"), accept_timeout_s=600)
    policy = server.cfg / "policies" / "default.toml"
    policy.write_text(policy.read_text(encoding="utf-8").replace("patterns = []", WECHAT), encoding="utf-8")
    start, end = off_shift_window(datetime.now(SHANGHAI))
    server.next_on = start
    agents = server.cfg / "agents.toml"  # 小美 and 小林 can hold every buyer of this module's tests at once
    agents.write_text(agents.read_text(encoding="utf-8").replace("max_concurrent = 5", "max_concurrent = 20", 2), encoding="utf-8")
    with agents.open("a", encoding="utf-8") as f:
        f.write(f"""
[[agents]]
id = "a-03"
name = "小周"
skills = ["presale", "logistics", "aftersale"]
shops = ["pdd-a"]
max_concurrent = 5
timezone = "Asia/Shanghai"
schedule = [{{ days = "mon-sun", start = "{start}", end = "{end}" }}]
""")
    yield from server.serving()


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    """A server whose conversations end 2 s after the agent's last reply if the buyer says nothing."""
    server = Served(tmp_path_factory.mktemp("quiet"), accept_timeout_s=600)
    policy = server.cfg / "policies" / "default.toml"
    text = re.sub(r"(?m)^(accept_timeout_s = .*)$", r"\1\nidle_close_s = 2\nbot_idle_close_s = 2", policy.read_text(encoding="utf-8"))
    assert "idle_close_s = 2" in text
    policy.write_text(text, encoding="utf-8")
    yield from server.serving()


def _lead(served) -> str:
    return served.token("acme:lead-a")


def _set_status(served, aid: str, status: str) -> None:
    code, body = served.request("PUT", f"/v1/agents/{aid}/status", {"status": status}, token=_lead(served))
    assert code == 200, body


def _conversation(served, cid: str) -> dict:
    status, body = served.request("GET", f"/v1/conversations/{cid}", token=served.token("acme"))
    return body if status == 200 else {}


def _open(page, cid: str, nick: str) -> None:
    """Select a conversation and accept it if it waits for that."""
    page.locator(f'.conv[data-id="{cid}"]').click()
    expect(page.locator("#chat-title")).to_have_text(nick)
    if page.locator("#accept-bar").is_visible():
        page.click("#accept")
    expect(page.locator("#draft")).to_be_enabled()


def test_a_transfer_takes_its_draft_along_and_the_next_buyer_gets_an_empty_composer(served, open_page):
    _set_status(served, "a-02", "offline")
    page = open_page("acme", "a01", "workbench.html")
    expect(page.locator("#conn")).to_have_text("● 已连接")
    _set_status(served, "a-01", "online")
    expect(page.locator('.status-btn[data-status="online"]')).to_have_class(re.compile("active"))
    served.post([message("x-1", "b-910", "在吗", buyer={"nick": "阿甲"}), message("x-2", "b-911", "有现货吗", buyer={"nick": "阿乙"})])
    _open(page, "pdd-a:b-911", "阿乙")
    page.locator("#draft").fill("阿乙：有现货，今天发")
    _open(page, "pdd-a:b-910", "阿甲")
    page.locator("#draft").fill("阿甲：给您退款")

    _set_status(served, "a-02", "online")
    page.click("#transfer-btn")
    page.select_option("#transfer-agent", "a-02")
    page.click("#transfer-agent-go")
    expect(page.locator('.conv[data-id="pdd-a:b-910"]')).to_have_count(0)
    expect(page.locator("#chat-main")).to_be_hidden()
    # 阿甲 comes back (小林 leaves) and is selected by itself: the old words are not in the composer
    _set_status(served, "a-02", "offline")
    expect(page.locator("#chat-title")).to_have_text("阿甲")
    expect(page.locator("#draft")).to_have_value("")
    # 阿乙's own draft is where it was left, and goes to 阿乙
    page.locator('.conv[data-id="pdd-a:b-911"]').click()
    expect(page.locator("#draft")).to_have_value("阿乙：有现货，今天发")
    page.locator("#draft").press("Enter")
    expect(page.locator("#history .msg.agent")).to_have_text([re.compile("阿乙：有现货，今天发$")])
    served.wait_for(lambda: [h["text"] for h in _conversation(served, "pdd-a:b-911").get("history", []) if h["who"] == "agent"]
                    == ["阿乙：有现货，今天发"], what="the reply to 阿乙")
    assert [h for h in _conversation(served, "pdd-a:b-910").get("history", []) if h["who"] == "agent"] == []


def _png() -> bytes:
    from tests.web.test_buyer_story import png

    return png(120, 90, (90, 160, 120))


def _wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(b"\x80" * 2000)  # a quarter of a second of silence (a message holds 10 000 characters)
    return out.getvalue()


def test_media_and_cards_arrive_as_the_buyer_sent_them(served, open_page):
    _set_status(served, "a-02", "offline")
    page = open_page("acme", "a01", "workbench.html")
    # the platform's picture host, answered by the test (the browser never leaves the machine)
    page.route(f"{CDN}/**", lambda route: route.fulfill(status=200, content_type="image/png", body=_png()))
    expect(page.locator("#conn")).to_have_text("● 已连接")
    _set_status(served, "a-01", "online")
    expect(page.locator('.status-btn[data-status="online"]')).to_have_class(re.compile("active"))
    picture = f"{CDN}/chat/wxid_abc123.png"
    voice = "data:audio/wav;base64," + base64.b64encode(_wav()).decode()
    video = f"{CDN}/chat/wxid_abc123.mp4"
    served.post([message("m-1", "b-920", picture, kind="image", buyer={"nick": "图图"}),
                 message("m-2", "b-920", voice, kind="voice", buyer={"nick": "图图"}),
                 message("m-3", "b-920", video, kind="video", buyer={"nick": "图图"}),
                 message("m-4", "b-920", '{"title": "加厚羽绒服 黑色 M", "price": 459}', kind="goods_card", buyer={"nick": "图图"}),
                 message("m-5", "b-920", '{"order_id": "240101-77", "goods": "加厚羽绒服 黑色 M", "amount": 459, "status": "shipped"}',
                         kind="order_card", buyer={"nick": "图图"}),
                 message("m-6", "b-920", "加我微信wxid_abc123", buyer={"nick": "图图"})])
    _open(page, "pdd-a:b-920", "图图")
    history = page.locator("#history")
    expect(history.locator(".msg.buyer")).to_have_count(6)  # each once, though the batch came before the socket's frames
    expect(history.locator("img.pic")).to_have_attribute("src", picture)
    page.wait_for_function("() => { const i = document.querySelector('#history img.pic'); return i && i.complete && i.naturalWidth === 120; }")
    expect(history.locator("audio.voice")).to_have_attribute("src", voice)
    page.wait_for_function("() => { const a = document.querySelector('#history audio.voice'); return a && a.readyState >= 1 && Math.abs(a.duration - 0.25) < 0.01; }")
    expect(history.locator("video.video")).to_have_attribute("src", video)
    expect(history.locator(".card.goods .title")).to_have_text("加厚羽绒服 黑色 M")
    expect(history.locator(".card.goods .price")).to_have_text("¥459.00")
    expect(history.locator(".card.order .title")).to_have_text("加厚羽绒服 黑色 M")
    expect(history.locator(".card.order .sub")).to_have_text("订单号 240101-77 · 已发货 · ¥459.00")
    # what the buyer typed is judged and masked; the media links above were not
    last = history.locator(".msg.buyer .bubble").last
    expect(last).not_to_contain_text("wxid_abc123")
    expect(last).to_contain_text("加我")
    stored = [h["text"] for h in _conversation(served, "pdd-a:b-920")["history"] if h["who"] == "buyer"]
    assert stored[:3] == [picture, voice, video]


TODAY = re.compile(r"回复 (\d+) · 3分钟回复率 (\S+) · 首响 (\S+) · 平均响应 (\S+)")


def test_the_status_bar_and_the_dashboard_give_the_same_figures(served, open_page):
    page = open_page("acme", "a02", "workbench.html")
    expect(page.locator("#conn")).to_have_text("● 已连接")
    page.click('.status-btn[data-status="online"]')
    expect(page.locator('.status-btn[data-status="online"]')).to_have_class(re.compile("active"))
    _set_status(served, "a-01", "offline")
    _set_status(served, "a-03", "offline")
    served.post([message("f-1", "b-930", "这件有黑色吗", buyer={"nick": "数数"}),
                 message("f-2", "b-931", "什么时候发货", buyer={"nick": "算算"})])
    # 今日接待 follows the conversations an agent receives, as the server counts them
    expect(page.locator('.conv[data-id="pdd-a:b-931"]')).to_be_visible()

    def agree() -> bool:
        code, mine = served.request("GET", "/v1/today", token=served.token("acme:a02"))
        shown = re.search(r"今日接待 (\d+)", page.locator("#today").inner_text())
        return code == 200 and shown is not None and int(shown.group(1)) == mine["conversations"] >= 2

    served.wait_for(agree, what="今日接待 as the server counts it")
    for cid, nick, text in (("pdd-a:b-930", "数数", "有的，黑色有货"), ("pdd-a:b-931", "算算", "今天16点前发出")):
        _open(page, cid, nick)
        page.locator("#draft").fill(text)
        page.locator("#draft").press("Enter")
        expect(page.locator("#history .msg.agent")).to_have_count(1)
    expect(page.locator("#today")).to_contain_text("回复 2 ·")
    expect(page.locator("#today")).to_have_text(TODAY)
    replies, rate, _first, average = TODAY.search(page.locator("#today").inner_text()).groups()
    assert rate == "100.0%"

    dash = open_page("acme", "lead-a", "dashboard.html")
    expect(dash.locator("#feed-state")).to_have_text("● 实时")
    row = dash.locator('tr[data-agent="a-02"] td')
    expect(row.nth(4)).to_have_text(f"{replies} · 3分钟 {rate}")
    expect(row.nth(5)).to_have_text(average)
    _set_status(served, "a-02", "offline")


def test_an_agent_off_shift_shows_it_and_is_not_offered(served, open_page):
    _set_status(served, "a-03", "online")  # their own status says online: the shift says otherwise
    dash = open_page("acme", "lead-a", "dashboard.html", timezone_id="Asia/Shanghai")
    expect(dash.locator("#feed-state")).to_have_text("● 实时")
    row = dash.locator('tr[data-agent="a-03"]')
    expect(row).to_have_attribute("data-status", "off_shift")
    expect(row).to_contain_text("排班外")
    expect(row.locator("select")).to_have_value("online")
    expect(dash.locator('[data-kpi="next-on"] strong')).to_have_text(f"小周 {served.next_on}")
    # 在线客服 counts the agents online in their shift, never 小周
    dash.wait_for_function("""() => {
        const online = document.querySelectorAll('#agents tr[data-status="online"]').length;
        const all = document.querySelectorAll('#agents tr').length;
        const kpi = document.querySelector('[data-kpi="online"] strong');
        return kpi && kpi.textContent === `${online}/${all}` && all === 3; }""")

    page = open_page("acme", "a01", "workbench.html")
    expect(page.locator("#conn")).to_have_text("● 已连接")
    _set_status(served, "a-01", "online")
    _set_status(served, "a-02", "offline")
    expect(page.locator('.status-btn[data-status="online"]')).to_have_class(re.compile("active"))
    served.post(message("o-1", "b-940", "我想换个尺码", buyer={"nick": "换换"}))
    _open(page, "pdd-a:b-940", "换换")
    page.click("#transfer-btn")
    option = page.locator('#transfer-agent option[value="a-03"]')
    expect(option).to_be_disabled()
    expect(option).to_contain_text("排班外")
    expect(page.locator("#transfer-agent")).not_to_have_value("a-03")
    page.keyboard.press("Escape")

    dash.locator('#conversations tr[data-conversation="pdd-a:b-940"] button.move').click()
    option = dash.locator('#move-agent option[value="a-03"]')
    expect(option).to_be_disabled()
    expect(option).to_contain_text("排班外")
    dash.keyboard.press("Escape")
    _set_status(served, "a-03", "offline")


def test_a_conversation_the_buyers_silence_ends_leaves_the_list(browser, quiet):
    errors: list[str] = []
    ctx, page = log_in(browser, quiet.url, "acme", "a01", "workbench.html", errors)
    try:
        expect(page.locator("#conn")).to_have_text("● 已连接")
        quiet.post(message("l-1", "b-950", "好的谢谢，我再看看", buyer={"nick": "静静"}))
        _open(page, "pdd-a:b-950", "静静")
        page.locator("#draft").fill("好的，有需要随时找我~")
        page.locator("#draft").press("Enter")
        expect(page.locator("#history .msg.agent")).to_have_count(1)
        # two seconds of the buyer's silence (plus one sweep) and the platform-style close arrives
        expect(page.locator('.conv[data-id="pdd-a:b-950"]')).to_have_count(0, timeout=30_000)
        expect(page.locator("#toasts .toast").filter(has_text="与静静的会话已结束")).to_be_visible()
        expect(page.locator("#chat-empty")).to_be_visible()
        expect(page.locator("#draft")).to_have_value("")
        assert quiet.wait_for(lambda: _conversation(quiet, "pdd-a:b-950").get("state") in (None, "closed")
                              or _conversation(quiet, "pdd-a:b-950") == {}, what="the close on the server")
    finally:
        ctx.close()
    assert errors == []
