"""The buyer's story in a real browser (Debian's Chromium through Playwright) against a real
``fenliu serve`` subprocess: PMC pushes (the recorded frames, signed like a relay) ship one order
and open a return on another; the buyer panel's 订单 tab lists both orders with courier, tracking
number, parcel scans and the after-sale state; the 售后 view lists the open request and opens the
buyer's conversation; images and goods/order cards render in the chat as the buyer sent them.

Screenshots of the buyer panel and the 售后 view at 1366×768 and 1920×1080 go to docs/images/ with
``FENLIU_DOCS_IMAGES=1`` (tests/web/support.py: shots).
"""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib

import pytest

from router.core.signing import SIGNATURE_HEADER, sign
from tests.conftest import DATA
from tests.router.serve_support import SECRET_A
from tests.web.conftest import log_in
from tests.web.support import Served, message, shots

pytestmark = [pytest.mark.browser, pytest.mark.slow]
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
WAIT = 15_000
expect.set_options(timeout=WAIT)


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour PNG: a picture the browser must decode, made without an image library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


PHOTO = "data:image/png;base64," + base64.b64encode(png(160, 120, (226, 140, 90))).decode()
THUMB = "data:image/png;base64," + base64.b64encode(png(56, 56, (60, 90, 160))).decode()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = Served(tmp_path_factory.mktemp("story"), accept_timeout_s=600)
    yield from server.serving()


@pytest.fixture(scope="module")
def page(browser, served):
    errors: list[str] = []
    ctx, pg = log_in(browser, served.url, "acme", "a01", "workbench.html", errors, timezone_id="Asia/Shanghai")
    expect(pg.locator("#conn")).to_have_text("● 已连接")
    yield pg
    ctx.close()
    assert errors == []


def push_pmc(served) -> None:
    body = (DATA / "adapter_pmc_frames.json").read_bytes()
    status, acks = served.request("POST", "/v1/webhooks/pinduoduo/pdd-a", raw=body,
                                  headers={SIGNATURE_HEADER: sign(SECRET_A.encode(), body)})
    assert status == 200 and [a["id"] for a in acks] == [7311, 7312, 7313, 7314, 7315], acks


def refund(frame_id: int, kind: str, tid: str, refund_id: int, buyer: str, fee: int, sales_type: int,
           reason: str | None) -> dict:
    content = {"tid": tid, "refund_id": refund_id, "buyer_id": buyer, "refund_fee": fee, "after_sales_type": sales_type,
               "refund_reason": reason}
    return {"commandType": "Common", "id": frame_id, "time": 1763900000000 + frame_id * 1000,
            "message": {"type": kind, "mallID": 1001, "content": json.dumps(content, ensure_ascii=False)}}


def shoot(page, name: str) -> None:
    """The same view at both sizes the team works at (once the toasts are gone); back to
    1366×768 after."""
    expect(page.locator(".toast")).to_have_count(0)
    page.screenshot(path=str(shots() / f"{name}.png"))
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.wait_for_function("() => window.innerWidth === 1920")
    page.screenshot(path=str(shots() / f"{name}-1920.png"))
    page.set_viewport_size({"width": 1366, "height": 768})
    page.wait_for_function("() => window.innerWidth === 1366")


def test_buyer_panel_orders_logistics_and_the_aftersale_view(served, page):
    lady = {"nick": "林小姐", "level": 3}
    served.post(message("s-1", "b-42", "马甲有个洞，我要退货", buyer=lady,
                        order={"order_id": "240101-88", "status": "delivered", "amount": 199.0, "goods": "轻薄羽绒马甲 米白 L"}))
    served.post([message("s-2", "b-42", PHOTO, kind="image", buyer=lady),
                 message("s-3", "b-42", json.dumps({"title": "轻薄羽绒马甲 米白 L", "price": 199, "pic": THUMB},
                                                   ensure_ascii=False), kind="goods_card", buyer=lady),
                 message("s-4", "b-42", json.dumps({"order_id": "240101-88", "goods": "轻薄羽绒马甲 米白 L", "amount": 199,
                                                    "status": "delivered"}, ensure_ascii=False),
                         kind="order_card", buyer=lady)])
    served.post(message("s-5", "b-50", "我的快递到哪了，怎么还没到", buyer={"nick": "周先生"}, order={"order_id": "240101-90"}))
    push_pmc(served)
    # two more requests of the shop: one whose buyer has no conversation open, one that ends
    refunds = [refund(7501, "pdd_refund_RefundCreated", "240102-11", 99001, "b-70", 5900, 1, "未收到货"),
               refund(7502, "pdd_refund_RefundCreated", "240102-12", 99002, "b-71", 12900, 1, "拍错了"),
               refund(7503, "pdd_refund_RefundSuccess", "240102-12", 99002, "b-71", 12900, 1, None)]
    raw = json.dumps(refunds, ensure_ascii=False).encode()
    status, _ = served.request("POST", "/v1/webhooks/pinduoduo/pdd-a", raw=raw,
                               headers={SIGNATURE_HEADER: sign(SECRET_A.encode(), raw)})
    assert status == 200

    lin = page.locator('.conv[data-id="pdd-a:b-42"]')
    lin.click()
    expect(page.locator("#chat-title")).to_have_text("林小姐")
    expect(lin.locator(".conv-last")).to_have_text('[订单卡片] 轻薄羽绒马甲 米白 L')
    page.click("#accept")
    expect(page.locator("#accept-bar")).to_be_hidden()

    # media and cards, as the buyer sent them
    photo = page.locator("#history .msg.buyer img.pic")
    expect(photo).to_have_attribute("src", PHOTO)
    page.wait_for_function("() => { const i = document.querySelector('#history img.pic'); return i && i.complete && i.naturalWidth === 160; }")
    goods = page.locator("#history .card.goods")
    expect(goods.locator(".title")).to_have_text("轻薄羽绒马甲 米白 L")
    expect(goods.locator(".price")).to_have_text("¥199.00")
    page.wait_for_function("() => { const i = document.querySelector('#history .card.goods img.thumb'); return i && i.complete && i.naturalWidth === 56; }")
    expect(page.locator("#history .card.order .sub")).to_have_text("订单号 240101-88 · 已签收 · ¥199.00")

    # the buyer panel: the order with its return request
    page.click('.side-tab[data-side="order"]')
    vest = page.locator('.buyer-order[data-order="240101-88"]')
    expect(vest.locator("header .badge")).to_have_text("同意退款")
    expect(vest.locator(".goods")).to_have_text("轻薄羽绒马甲 米白 L")
    expect(vest.locator(".aftersale")).to_contain_text("售后 · 退货退款")
    expect(vest.locator(".aftersale .badge")).to_have_text("已同意")
    expect(vest.locator(".aftersale")).to_contain_text("退款 ¥199.00 · 质量问题")

    # the other buyer: shipped, with courier, tracking number and the latest scans
    page.locator('.conv[data-id="pdd-a:b-50"]').click()
    expect(page.locator("#chat-title")).to_have_text("周先生")
    page.click("#accept")
    coat = page.locator('.buyer-order[data-order="240101-90"]')
    expect(coat.locator(".courier")).to_have_text("中通快递")
    expect(coat.locator(".tracking")).to_have_text("78311234567890")
    expect(coat.locator("header .badge")).to_have_text("已发货")
    expect(coat.locator(".trace .scan")).to_have_count(3)
    expect(coat.locator(".trace .scan.latest")).to_contain_text("【广州市】快件已到达 广州转运中心")
    expect(coat.locator(".trace .scan.latest b")).to_have_text("运输中")
    expect(coat.locator(".trace .scan").last).to_contain_text("已揽收")
    page.click('.side-tab[data-side="buyer"]')
    expect(page.locator("#buyer-facts")).to_contain_text("1 笔")
    page.click('.side-tab[data-side="order"]')
    shoot(page, "buyer-panel")

    # a new scan arrives while the agent looks at the buyer: the panel follows the push
    frame = {"commandType": "Common", "id": 7400, "time": 1764000000000,
             "message": {"type": "pdd_logistics_TraceUpdate", "mallID": 1001, "content": json.dumps(
                 {"tid": "240101-90", "traces": [{"time": "2025-11-25 09:05:00", "desc": "【广州市】快递员 王师傅 正在派件",
                                                  "action": "DELIVERING"}]}, ensure_ascii=False)}}
    raw = json.dumps(frame, ensure_ascii=False).encode()
    status, _ = served.request("POST", "/v1/webhooks/pinduoduo/pdd-a", raw=raw,
                               headers={SIGNATURE_HEADER: sign(SECRET_A.encode(), raw)})
    assert status == 200
    expect(coat.locator(".trace .scan.latest")).to_contain_text("正在派件")
    expect(coat.locator(".trace .scan.latest b")).to_have_text("派送中")
    expect(coat.locator(".trace-more summary")).to_have_text("全部物流轨迹（4条）")

    # 售后: the open request of my shop; its row opens the buyer's conversation
    page.click('.nav[data-pane="aftersale"]')
    row = page.locator('#aftersale-body tr[data-aftersale="88123"]')
    expect(row).to_contain_text("退货退款")
    expect(row).to_contain_text("已同意")
    expect(row).to_contain_text("¥199.00")
    expect(row).to_contain_text("质量问题")
    expect(row).to_contain_text("我的会话")
    expect(row).to_contain_text("林小姐")
    other = page.locator('#aftersale-body tr[data-aftersale="99001"]')
    expect(other).to_contain_text("仅退款")
    expect(other).to_contain_text("待处理")
    expect(other).to_contain_text("无进行中会话")
    expect(page.locator("#aftersale-body tr")).to_have_count(2)  # the refunded one is not open
    expect(page.locator("#aftersale-count")).to_have_text("（2）")
    shoot(page, "aftersales")
    row.click()
    expect(page.locator("#pane-chat")).to_be_visible()
    expect(page.locator("#chat-title")).to_have_text("林小姐")
    expect(page.locator('.side-tab[data-side="order"]')).to_have_class(re.compile("active"))
    expect(page.locator('.buyer-order[data-order="240101-88"] .aftersale .badge')).to_have_text("已同意")
    expect(page.locator(".toast")).to_have_count(0)
    page.screenshot(path=str(shots() / "buyer-panel-aftersale.png"))
