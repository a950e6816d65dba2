"""The skills plugin: ordered rules, first match wins, sticky skills with explicit switches."""

from __future__ import annotations

import json

import msgspec
import pytest

from plugins.skills import KeywordIndex, SkillsConfig
from router.core.config import ConfigErrors, load_config
from tests.conftest import T0, run_fenliu

pytestmark = pytest.mark.anyio

RULES = """
[bot]
enabled = false

[skills]
default = "presale"

[[skills.rules]]
skill = "aftersale"
kinds = ["order_card"]

[[skills.rules]]
skill = "aftersale"
switch = true
keywords = ["退款", "破损"]
regex = "我(要|想)(退|换)"

[[skills.rules]]
skill = "logistics"
keywords = ["快递", "物流"]

[[skills.rules]]
skill = "presale"
platforms = ["taobao"]
keywords = ["88VIP"]

[[skills.rules]]
skill = "aftersale"
order_status = ["delivered", "refunding"]

[[skills.rules]]
skill = "logistics"
order_status = ["shipped"]
"""


def write_policy(config_dir, body: str, names=("default", "vip")) -> None:
    for name in names:
        (config_dir / "policies" / f"{name}.toml").write_text(
            '[dispatch]\nstrategy = "round_robin"\ntargets = [{ skills = ["@skill"] }]\n' + body, encoding="utf-8")


@pytest.fixture
def harness(fenliu_harness, fenliu_config_dir):
    write_policy(fenliu_config_dir, RULES)
    return fenliu_harness()


# -- KeywordIndex -------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [0, 20], ids=["in-checks", "automaton"])
def test_keyword_index_finds_every_pair_in_order(extra):
    pairs = [("退款", "a"), ("快递", "b"), ("VIP", "c"), ("退款", "d")] + [(f"词{i}", i) for i in range(extra)]
    index = KeywordIndex(pairs)
    assert (index._ac is None) == (extra == 0)
    assert index.matches("我是vip，快递到了要退款".lower()) == [("退款", "a"), ("快递", "b"), ("VIP", "c"), ("退款", "d")]
    assert index.matches("没有") == []
    assert not KeywordIndex([]) and KeywordIndex([("x", 1)])


def test_keyword_index_finds_overlapping_keywords():
    index = KeywordIndex([("退款", 1), ("款到", 2), ("退", 3)] + [(f"x{i}", 0) for i in range(10)])
    assert sorted(v for _, v in index.matches("退款到账")) == [1, 2, 3]


# -- rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "skill"), [
    ({"text": "[订单]", "kind": "order_card"}, "aftersale"),
    ({"text": "收到就破损了"}, "aftersale"),
    ({"text": "我想换个颜色"}, "aftersale"),
    ({"text": "快递到哪了"}, "logistics"),
    ({"text": "你好", "order": {"status": "delivered"}}, "aftersale"),
    ({"text": "你好", "order": {"status": "refunding"}}, "aftersale"),
    ({"text": "你好", "order": {"status": "shipped"}}, "logistics"),
    ({"text": "物流呢", "order": {"status": "delivered"}}, "logistics"),
    ({"text": "你好", "order": {"status": "unpaid"}}, "presale"),
    ({"text": "有什么颜色"}, "presale"),
    ({"text": "88vip有折扣吗", "order": {"status": "delivered"}}, "aftersale"),
    ({"text": "88vip有折扣吗", "order": {"status": "delivered"}, "shop_id": "tb-2001"}, "presale"),
])
async def test_first_matching_rule_wins(harness, fields, skill):
    d = await harness.send({"shop_id": "pdd-1001", "buyer_id": "b-1", **fields})
    assert d.skill == skill


async def test_open_conversation_keeps_its_skill_unless_a_rule_switches(harness):
    a = await harness.send(shop_id="pdd-1001", buyer_id="b-1", text="这款有黑色吗")
    b = await harness.send(shop_id="pdd-1001", buyer_id="b-1", text="那快递发哪家")
    c = await harness.send(shop_id="pdd-1001", buyer_id="b-1", text="算了我要退款")
    d = await harness.send(shop_id="pdd-1001", buyer_id="b-1", text="快递单号发你了")
    assert [x.skill for x in (a, b, c, d)] == ["presale", "presale", "aftersale", "aftersale"]
    assert [x.agent_id for x in (a, b, c, d)] == ["a-01", "a-01", "a-03", "a-03"]


async def test_no_match_and_no_default_defers_to_the_policy(fenliu_harness, fenliu_config_dir):
    write_policy(fenliu_config_dir, '[skills]\n[[skills.rules]]\nskill = "aftersale"\nkeywords = ["退款"]\n')
    text = (fenliu_config_dir / "policies" / "default.toml").read_text(encoding="utf-8")
    (fenliu_config_dir / "policies" / "default.toml").write_text(
        text.replace('strategy = "round_robin"\n', 'strategy = "round_robin"\ndefault_skill = "logistics"\n'), encoding="utf-8")
    h = fenliu_harness()
    assert (await h.send(shop_id="pdd-1001", buyer_id="b-1", text="你好")).skill == "logistics"
    assert (await h.send(shop_id="pdd-1001", buyer_id="b-2", text="我要退款")).skill == "aftersale"


async def test_disabled_skills_plugin_has_no_opinion(fenliu_harness, fenliu_config_dir):
    write_policy(fenliu_config_dir, RULES.replace('[skills]\n', '[skills]\nenabled = false\n'))
    h = fenliu_harness()
    assert (await h.send(shop_id="pdd-1001", buyer_id="b-1", text="快递到哪了")).skill == "presale"


def test_defaults_are_complete():
    cfg = msgspec.convert({}, SkillsConfig)
    assert cfg.enabled and cfg.default == "" and cfg.rules == ()


# -- configuration errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("rules", "error"), [
    ('[[skills.rules]]\nskill = "aftersale"\nregex = "(退款"\n', "skills.rules[3].regex: invalid regular expression: missing ), unterminated subpattern at position 0"),
    ('[[skills.rules]]\nskill = "aftersale"\n', "skills.rules[3]: a rule needs at least one condition"),
    ('[[skills.rules]]\nkeywords = ["x"]\n', "skills.rules[3].skill: required key is missing"),
    ('[[skills.rules]]\nskill = "vvip"\nkeywords = ["x"]\n', "skills.rules[3].skill: no agent has skill 'vvip'"),
    ('[[skills.rules]]\nskill = "presale"\nkeyword = ["x"]\n', "skills.rules[3].keyword: unknown key"),
    ('[[skills.rules]]\nskill = "presale"\nkinds = ["sticker"]\n', "skills.rules[3].kinds[0]: invalid enum value 'sticker'"),
    ('[[skills.rules]]\nskill = "presale"\nplatforms = ["amazon"]\n', "skills.rules[3].platforms[0]: invalid enum value 'amazon'"),
    ('[[skills.rules]]\nskill = "presale"\nkeywords = ["  "]\n', "skills.rules[3].keywords[0]: empty keyword"),
])
def test_bad_rules_name_file_and_key(fenliu_config_dir, rules, error):
    ok = '[[skills.rules]]\nskill = "presale"\nkeywords = ["a"]\n' * 3
    write_policy(fenliu_config_dir, "[skills]\n" + ok + rules, names=("default",))
    with pytest.raises(ConfigErrors) as exc:
        load_config(fenliu_config_dir)
    assert f"{fenliu_config_dir / 'policies' / 'default.toml'}: {error}" in str(exc.value).splitlines()[0]


def test_bad_default_skill(fenliu_config_dir):
    write_policy(fenliu_config_dir, '[skills]\ndefault = "nobody"\n', names=("default",))
    with pytest.raises(ConfigErrors, match=r"default.toml: skills.default: no agent has skill 'nobody'"):
        load_config(fenliu_config_dir)


def test_check_command_reports_a_bad_regex(fenliu_config_dir):
    write_policy(fenliu_config_dir, '[skills]\n[[skills.rules]]\nskill = "presale"\nregex = "[a-"\n', names=("vip",))
    r = run_fenliu("check", "--config", str(fenliu_config_dir))
    assert r.returncode == 1
    assert f"{fenliu_config_dir / 'policies' / 'vip.toml'}: skills.rules[0].regex: invalid regular expression" in r.stdout + r.stderr


# -- end to end -----------------------------------------------------------------------------------------


def test_route_switches_a_presale_chat_to_aftersale(demo_config):
    lines = [
        {"shop_id": "pdd-1001", "msg_id": "s-1", "buyer_id": "b-7", "text": "这款羽绒服有现货吗", "ts": T0},
        {"shop_id": "pdd-1001", "msg_id": "s-2", "buyer_id": "b-7", "text": "快递发哪家", "ts": T0 + 5},
        {"shop_id": "pdd-1001", "msg_id": "s-3", "buyer_id": "b-7", "text": "算了不要了，我要退款", "ts": T0 + 10},
        {"shop_id": "tb-2001", "msg_id": "s-4", "buyer_id": "b-8", "text": "[订单卡片]", "kind": "order_card", "ts": T0 + 15},
    ]
    r = run_fenliu("route", "--config", str(demo_config), "-",
                   input="".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    assert r.returncode == 0, r.stderr
    got = [(d["msg_id"], d["action"], d["agent_id"], d["skill"], d["reply"]) for d in map(json.loads, r.stdout.splitlines())]
    assert got == [
        ("s-1", "assigned", "a-01", "presale", "亲，您好！欢迎光临暖冬羽绒旗舰店，请问有什么可以帮您？"),
        ("s-2", "assigned", "a-01", "presale", None),
        ("s-3", "assigned", "a-03", "aftersale", None),
        ("s-4", "assigned", "a-04", "aftersale", "您好，您的售后问题已收到，正在为您转接售后客服，请稍候。"),
    ]


def test_docs_name_every_key():
    from plugins.skills import SkillRule
    from tests.conftest import ROOT

    doc = (ROOT / "docs" / "plugins" / "skills.md").read_text(encoding="utf-8")
    for struct in (SkillsConfig, SkillRule):
        for field in msgspec.structs.fields(struct):
            assert f"| `{field.name}` |" in doc, field.name
