"""Media and cards pass through the inbound filter untouched: it judges what a buyer wrote, and
an image's or a card's text is a link or a payload (masking ``…/wxid_abc123.png`` breaks the
picture)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.anyio

MEDIA = [
    ("image", "https://img.example.com/upload/wxid_abc123.png"),
    ("image", "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkQQ13vx8AAAAASUVORK5CYII="),
    ("video", "https://v.example.com/qq12345678/加微信.mp4"),
    ("voice", "https://audio.example.com/vx_weixin123.amr"),
    ("goods_card", '{"goods_id": "6623", "title": "加绒卫衣 最好的 第一名", "url": "https://m.example.com/g/6623"}'),
    ("order_card", '{"order_id": "240101-88", "note": "QQ 12345678"}'),
]


@pytest.mark.parametrize(("kind", "text"), MEDIA)
async def test_media_text_is_not_masked(fenliu_harness, kind, text):
    h = fenliu_harness()
    d = await h.send(shop_id="pdd-1001", buyer_id="b-1", kind=kind, text=text)
    assert d.action != "blocked"
    assert d.text in (None, text), d.text


async def test_the_same_words_typed_by_the_buyer_are_still_masked(fenliu_harness):
    h = fenliu_harness()
    d = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="加我微信 wxid_abc123 聊")
    assert d.text is not None and "wxid_abc123" not in d.text
