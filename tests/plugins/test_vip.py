"""The vip plugin: additive, capped priority with a flag per rule, and the VIP skill group."""

from __future__ import annotations

import json

import msgspec
import pytest

from plugins.vip import VipConfig, is_vip, score
from router.core.config import ConfigErrors, load_config
from router.core.models import Buyer, Message, Order
from tests.conftest import T0, run_fenliu

pytestmark = pytest.mark.anyio

CFG = msgspec.convert({
    "max_priority": 50,
    "tags": {"svip": 30, "vip": 10},
    "levels": [{"min": 5, "points": 10}, {"min": 3, "points": 4}],
    "lifetime_spend": [{"min": 1000, "points": 3}, {"min": 9999.5, "points": 8}],
    "order_amount": [{"min": 300, "points": 2}],
    "urgent_words": {"投诉": 20, "急": 5},
    "vip_skill": "vip",
    "vip_skill_tags": ["svip"],
    "vip_skill_min_level": 9,
}, VipConfig)


def msg(text="在吗", **kw):
    return Message(shop_id="pdd-1001", msg_id="m", buyer_id="b", text=text, **kw)


@pytest.mark.parametrize(("message", "skill", "expected"), [
    (msg(), "presale", (0, [])),
    (msg(buyer=Buyer(tags=("vip",))), "presale", (10, ["vip:vip"])),
    (msg(buyer=Buyer(tags=("vip", "svip"))), "presale", (40, ["vip:vip", "vip:svip"])),
    (msg(buyer=Buyer(level=3)), "presale", (4, ["vip:level>=3"])),
    (msg(buyer=Buyer(level=7)), "presale", (10, ["vip:level>=5"])),
    (msg(buyer=Buyer(lifetime_spend=10000)), "presale", (8, ["vip:spend>=9999.5"])),
    (msg(order=Order(amount=300)), "presale", (2, ["vip:order>=300"])),
    (msg("急急急 我要投诉"), "aftersale", (25, ["urgent:投诉", "urgent:急"])),
    (msg("急急急 我要投诉"), "presale", (0, [])),
    (msg("我要投诉", buyer=Buyer(tags=("svip",), level=5, lifetime_spend=5000), order=Order(amount=500)), "aftersale",
     (50, ["vip:svip", "vip:level>=5", "vip:spend>=1000", "vip:order>=300", "urgent:投诉"])),
])
def test_score_adds_up_caps_and_flags(message, skill, expected):
    assert score(message, skill, CFG) == expected


def test_score_uses_a_remembered_buyer_when_the_message_has_none():
    assert score(msg(), "presale", CFG, Buyer(tags=("vip",))) == (10, ["vip:vip"])
    assert score(msg(buyer=Buyer(level=3)), "presale", CFG, Buyer(tags=("vip",))) == (4, ["vip:level>=3"])


def test_urgent_words_in_every_skill_when_urgent_skills_is_empty():
    cfg = msgspec.convert({"urgent_words": {"投诉": 20}, "urgent_skills": []}, VipConfig)
    assert score(msg("投诉"), "presale", cfg) == (20, ["urgent:投诉"])


def test_is_vip_by_tag_level_or_spend():
    assert is_vip(msg(buyer=Buyer(tags=("svip",))), CFG)
    assert is_vip(msg(buyer=Buyer(level=9)), CFG)
    assert not is_vip(msg(buyer=Buyer(tags=("vip",), level=8, lifetime_spend=1e6)), CFG)
    assert not is_vip(msg(), CFG)


def test_defaults_are_complete_and_harmless():
    cfg = msgspec.convert({}, VipConfig)
    assert cfg.enabled and cfg.max_priority == 100 and cfg.vip_skill == ""
    assert score(msg("投诉", buyer=Buyer(tags=("vip",), level=9)), "aftersale", cfg) == (0, [])


# -- through the router -------------------------------------------------------------------------------


async def test_priority_orders_the_queue(fenliu_harness):
    h = fenliu_harness()
    for agent in ("a-01", "a-02", "a-03", "a-06"):
        await h.event({"type": "agent_status", "agent_id": agent, "status": "break"})
    plain = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="你好")
    vip = await h.send(shop_id="pdd-1001", buyer_id="b-2", text="你好", buyer={"tags": ["vip"], "level": 5})
    assert (plain.action, plain.priority, vip.action, vip.priority) == ("queued", 0, "queued", 30)
    moved = await h.event({"type": "agent_status", "agent_id": "a-01", "status": "online"})
    assert [d.conversation_id for d in moved][:1] == ["pdd-1001:b-2"]


async def test_later_urgent_message_raises_a_queued_conversation(fenliu_harness):
    h = fenliu_harness()
    for agent in ("a-01", "a-02", "a-03", "a-06"):
        await h.event({"type": "agent_status", "agent_id": agent, "status": "break"})
    first = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="收到的衣服破损了")
    second = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="再不处理我就投诉")
    assert (first.skill, first.priority) == ("aftersale", 0)
    assert (second.action, second.priority, second.flags) == ("queued", 30, ["urgent:投诉"])


async def test_vip_skill_only_for_new_conversations(fenliu_harness):
    h = fenliu_harness()
    a = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="你好")
    b = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="我是svip", buyer={"tags": ["svip"]})
    c = await h.send(shop_id="pdd-1001", buyer_id="b-2", text="你好", buyer={"tags": ["svip"]})
    assert (a.skill, b.skill, c.skill) == ("presale", "presale", "vip")
    assert (c.agent_id, c.flags) == ("a-06", ["vip_skill:vip", "vip:svip"])


async def test_disabled_vip_plugin_contributes_nothing(fenliu_harness, fenliu_config_dir):
    path = fenliu_config_dir / "policies" / "default.toml"
    path.write_text(path.read_text(encoding="utf-8").replace("[vip]\n", "[vip]\nenabled = false\n", 1), encoding="utf-8")
    h = fenliu_harness()
    d = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="你好", buyer={"tags": ["svip"], "level": 9})
    assert (d.skill, d.priority, d.flags) == ("presale", 0, [])


@pytest.mark.parametrize(("body", "error"), [
    ('[vip]\nvip_skill = "gold"\nvip_skill_tags = ["svip"]\n', "vip.vip_skill: no agent has skill 'gold'"),
    ('[vip]\nvip_skill = "vip"\n', "vip.vip_skill: set vip_skill_tags, vip_skill_min_level or vip_skill_min_spend"),
    ('[vip]\nmax_priority = -1\n', "vip.max_priority: expected int >= 0"),
    ('[vip]\nlevels = [{ min = 3 }]\n', "vip.levels[0].points: required key is missing"),
    ('[vip]\nlevels = [{ min = 3, points = 1, max = 4 }]\n', "vip.levels[0].max: unknown key"),
    ('[vip]\norder_amount = [{ min = -5, points = 1 }]\n', "vip.order_amount[0].min: expected float >= 0.0"),
    ('[vip.urgent_words]\n"" = 5\n', "vip.urgent_words: empty key"),
    ('[vip.tags]\nsvip = "high"\n', "vip.tags[...]: expected int, got str"),
])
def test_bad_vip_sections_name_file_and_key(fenliu_config_dir, body, error):
    (fenliu_config_dir / "policies" / "vip.toml").write_text('[dispatch]\nstrategy = "weighted"\n' + body, encoding="utf-8")
    with pytest.raises(ConfigErrors) as exc:
        load_config(fenliu_config_dir)
    assert f"{fenliu_config_dir / 'policies' / 'vip.toml'}: {error}" in str(exc.value)


def test_route_vip_priority_and_flags_end_to_end(demo_config):
    lines = [
        {"shop_id": "tb-2001", "msg_id": "v-1", "buyer_id": "b-1", "text": "耳机不开机，急用！", "ts": T0,
         "buyer": {"nick": "阿杰", "tags": ["88vip"], "level": 6, "lifetime_spend": 31000.0},
         "order": {"order_id": "TB-7001", "status": "delivered", "amount": 3299.0, "goods": "降噪耳机"}},
        {"shop_id": "pdd-1001", "msg_id": "v-2", "buyer_id": "b-2", "text": "在吗", "ts": T0 + 1,
         "buyer": {"tags": ["svip"], "level": 8}},
    ]
    r = run_fenliu("route", "--config", str(demo_config), "-",
                   input="".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    assert r.returncode == 0, r.stderr
    assert [json.loads(x) for x in r.stdout.splitlines()] == [
        {"msg_id": "v-1", "shop_id": "tb-2001", "conversation_id": "tb-2001:b-1", "action": "assigned", "agent_id": "a-04",
         "skill": "aftersale", "priority": 75, "reply": "您好，您的售后问题已收到，正在为您转接售后客服，请稍候。",
         "text": "耳机不开机，急用！", "flags": ["vip:88vip", "vip:level>=5", "vip:spend>=30000", "vip:order>=3000", "urgent:急用"],
         "cause": "message"},
        {"msg_id": "v-2", "shop_id": "pdd-1001", "conversation_id": "pdd-1001:b-2", "action": "assigned", "agent_id": "a-06",
         "skill": "vip", "priority": 60, "reply": "尊敬的会员您好，正在为您转接专属客服，请稍候~",
         "text": "在吗", "flags": ["vip_skill:vip", "vip:svip", "vip:level>=8"], "cause": "message"},
    ]


def test_docs_name_every_key():
    from tests.conftest import ROOT

    doc = (ROOT / "docs" / "plugins" / "vip.md").read_text(encoding="utf-8")
    for field in msgspec.structs.fields(VipConfig):
        assert f"| `{field.name}` |" in doc, field.name
