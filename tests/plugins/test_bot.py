"""The bot plugin: welcome, offline reply, FAQ, hand-off rules, rate limit, quick replies.

Also drives the shared corpus ``tests/data/bot_skills_vip_corpus.jsonl`` (bot, skills and vip
together on the demo config), each case on a fresh router.
"""

from __future__ import annotations

import json
import shutil

import msgspec
import pytest

from plugins import bot
from router.core.config import ConfigErrors, load_config
from router.core.models import Buyer, Message, Order
from router.tools.testing import Harness
from tests.conftest import DATA, ROOT, T0, run_fenliu

pytestmark = pytest.mark.anyio

CORPUS = [json.loads(line) for line in (DATA / "bot_skills_vip_corpus.jsonl").read_text(encoding="utf-8").splitlines()]
NIGHT = T0 + 41400  # 02:10 in Shanghai: every demo shop is closed

WELCOME = "亲，您好！欢迎光临暖冬羽绒旗舰店，请问有什么可以帮您？"
SHIP_TIME = "亲，现货商品付款后48小时内发货，预售商品以详情页标注的时间为准哦~"
REQUEST = "好的，正在为您转接人工客服，请稍候~"
REPEAT = "抱歉刚才的回答没能帮到您，正在为您转接人工客服，请稍候。"


def own_flags(flags):
    """Flags of this issue's plugins and dispatch; the sensitive filter's are tested elsewhere."""
    return [f for f in flags if not f.startswith("sensitive:")]


def test_corpus_is_big_and_covers_every_reply_kind():
    assert len(CORPUS) >= 100
    replies = {c["expect"]["reply"] for c in CORPUS}
    for text in (WELCOME, SHIP_TIME, REQUEST, REPEAT, None):
        assert text in replies
    assert {c["expect"]["action"] for c in CORPUS} == {"answered", "assigned", "queued"}
    assert {c["expect"]["skill"] for c in CORPUS} == {"presale", "aftersale", "logistics", "vip"}


@pytest.fixture(scope="module")
def demo_loaded():
    """The demo configuration, loaded once: a configuration is immutable once loaded, and each
    case gets its own router (conversations, agents, queues)."""
    return load_config(ROOT / "config")


@pytest.mark.parametrize("case", CORPUS, ids=[c["id"] for c in CORPUS])
async def test_corpus(case, demo_loaded):
    h = Harness(demo_loaded)
    for item in case["setup"]:
        if "type" in item:
            await h.event(item)
        else:
            await h.send(item)
    d = await h.send(case["message"])
    got = {"action": d.action, "skill": d.skill, "priority": d.priority, "flags": own_flags(d.flags), "reply": d.reply}
    assert got == case["expect"], case["note"]


# -- unit -------------------------------------------------------------------------------------


def write_policy(config_dir, body: str, name: str = "default") -> None:
    """Replace a policy file of a private config copy with a dispatch table plus ``body``."""
    (config_dir / "policies" / f"{name}.toml").write_text(
        '[dispatch]\nstrategy = "round_robin"\ntargets = [{ skills = ["@skill"] }]\n\n' + body, encoding="utf-8")


async def test_welcome_goes_out_with_the_assignment(fenliu_harness):
    h = fenliu_harness()
    d = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="在吗", buyer={"nick": "小王"})
    assert (d.action, d.agent_id, d.reply) == ("assigned", "a-01", "小王，您好！欢迎光临暖冬羽绒旗舰店，请问有什么可以帮您？")


async def test_bot_state_survives_the_first_message(fenliu_harness):
    h = fenliu_harness()
    first = await h.send(shop_id="tb-2001", buyer_id="b-1", text="什么时候发货")
    conv = h.dispatcher.conversations["tb-2001:b-1"]
    assert first.action == "answered" and conv.state == "bot" and first.flags == ["bot:settle:ship-time"]
    assert conv.meta["bot"] == {"answered": ["ship-time"], "last": SHIP_TIME}
    again = await h.send(shop_id="tb-2001", buyer_id="b-1", text="到底几天发货")
    assert (again.action, again.reply) == ("assigned", REPEAT)


async def test_rate_limit_never_sends_the_same_text_twice_in_a_row(fenliu_harness, fenliu_config_dir):
    write_policy(fenliu_config_dir, '[bot]\nrepeat_handoff = false\n')
    h = fenliu_harness()
    a = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="有运费险吗")
    b = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="运费险怎么算")
    assert a.action == "answered" and a.reply and a.reply.startswith("亲，暖冬羽绒旗舰店的商品都赠送运费险")
    assert (b.action, b.reply) == ("assigned", None)


async def test_offline_reply_when_no_agent_is_online(fenliu_harness):
    h = fenliu_harness()
    for agent in ("a-01", "a-02", "a-03", "a-06"):
        await h.event({"type": "agent_status", "agent_id": agent, "status": "break"})
    d = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="在吗")
    assert d.action == "queued"
    assert d.reply == "亲，您好！暖冬羽绒旗舰店的客服在线时间为每天08:00-23:00，您的留言已收到，上班后第一时间为您处理~"


async def test_empty_offline_text_keeps_the_handoff_reply(fenliu_harness, fenliu_config_dir):
    write_policy(fenliu_config_dir, '[bot]\nwelcome = "hi {buyer}"\n')
    h = fenliu_harness()
    d = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="转人工", ts=NIGHT)
    assert (d.action, d.reply) == ("queued", REQUEST)


async def test_while_human_offline_exception(fenliu_harness, fenliu_config_dir):
    write_policy(fenliu_config_dir, '[bot]\noffline = "{shop} 已下班"\nwhile_human = ["offline"]\nrepeat_handoff = false\n')
    h = fenliu_harness()
    a = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="在吗", ts=NIGHT)
    b = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="有人吗", ts=NIGHT + 5)
    assert (a.action, a.reply) == ("queued", "暖冬羽绒旗舰店 已下班")
    assert (b.action, b.reply) == ("queued", None), "same text twice in a row is suppressed"


async def test_disabled_bot_is_silent(fenliu_harness, fenliu_config_dir):
    write_policy(fenliu_config_dir, '[bot]\nenabled = false\n')
    h = fenliu_harness()
    d = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="转人工")
    assert (d.action, d.reply) == ("assigned", None)


async def test_handoff_skills_are_configurable(fenliu_harness, fenliu_config_dir):
    write_policy(fenliu_config_dir, '[bot.handoff_skills]\npresale = "售前专员马上到"\n')
    h = fenliu_harness()
    d = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="什么时候发货")
    assert (d.action, d.reply) == ("assigned", "售前专员马上到")


def test_render_fills_and_keeps_missing():
    values = {"buyer": "小王", "order_id": "240101-88"}
    assert bot.render("{buyer}: {order_id} {goods}", values) == "小王: 240101-88 "
    assert bot.render("{buyer}: {order_id} {goods}", values, keep_missing=True) == "小王: 240101-88 {goods}"


def test_placeholder_values_come_from_the_message_context(demo_config):
    config = load_config(demo_config)
    values = bot.placeholder_values(config.shops["pdd-1002"], Buyer(nick="果果"),
                                    Order(order_id="O-1", status="shipped", amount=59.9, goods="赣南脐橙"), {"buyer": "亲"})
    assert values == {"buyer": "果果", "shop": "鲜果直供", "order_id": "O-1", "goods": "赣南脐橙",
                      "amount": "59.90", "status": "shipped"}


def test_quick_replies_list_suggest_and_render(demo_config):
    config = load_config(demo_config)
    groups = {q.group for q in bot.list_quick_replies(config, "pdd-1001")}
    assert groups == {"shipping", "size", "freight_insurance", "coupon", "invoice", "returns", "fruit"}
    assert [q.id for q in bot.list_quick_replies(config, "tb-2001", group="digital")] == ["q-warranty"]
    assert [q.id for q in bot.suggest_quick_replies(config, "pdd-1001", "查物流")] == ["q-ask-order"]
    assert [q.id for q in bot.suggest_quick_replies(config, "pdd-1001", "发票")] == ["q-invoice-sent"]
    msg = Message(shop_id="pdd-1001", msg_id="m", buyer_id="b", buyer=Buyer(nick="小王"),
                  order=Order(order_id="240101-88", goods="羽绒服"))
    assert bot.render_quick_reply(config, "pdd-1001", "q-shipped", msg) == (
        "小王，您的订单240101-88（羽绒服）已经发货啦，请留意物流信息，收到后有任何问题随时找我们~")
    assert bot.render_quick_reply(config, "pdd-1001", "q-shipped") == (
        "亲，您的订单{order_id}（{goods}）已经发货啦，请留意物流信息，收到后有任何问题随时找我们~")
    assert bot.render_quick_reply(config, "pdd-1001", "q-shipped", order_id="X-1", goods="手套") == (
        "亲，您的订单X-1（手套）已经发货啦，请留意物流信息，收到后有任何问题随时找我们~")
    with pytest.raises(KeyError):
        bot.render_quick_reply(config, "tb-2001", "q-bad-fruit")


def test_every_demo_faq_file_is_valid():
    library = bot.load_faq(ROOT / "config")
    assert len(library.faq) >= 15 and len(library.quick) >= 10
    assert {"shipping", "size", "freight_insurance", "coupon", "invoice", "returns"} <= library.groups


@pytest.mark.parametrize(("toml", "error"), [
    ('[[faq]]\nid = "a"\nkeywords = ["x"]\nanswer = "hi {nick}"\n', "faq[0].answer: unknown placeholder `{nick}`"),
    ('[[faq]]\nid = "a"\nkeywords = []\nanswer = "hi"\n', "faq[0].keywords: an FAQ entry needs at least one keyword"),
    ('[[faq]]\nid = "a"\nkeywords = ["x"]\n', "faq[0].answer: required key is missing"),
    ('[[faq]]\nid = "a"\nkeywords = ["x"]\nanswer = "hi"\nscore = 3\n', "faq[0].score: unknown key"),
    ('[[quick]]\nid = "q"\ntext = "{buyer"\n', "quick[0].text: bad template"),
    ('[[faq]]\nid = "a"\nkeywords = [""]\nanswer = "hi"\n', "faq[0].keywords[0]: empty keyword"),
    ('[[faq]]\nid = "a"\nkeywords = ["x"]\nanswer = "hi"\nshops = ["nope"]\n', "faq[0].shops[0]: unknown shop 'nope'"),
    ('[[faq]]\nid = "ship-time"\nkeywords = ["x"]\nanswer = "hi"\n', "faq[0].id: duplicate id 'ship-time'"),
    ('[[faq]]\nid = "a"\nkeywords = ["x"]\nanswer = "hi"\n[[faq]]\nid = "a"\nkeywords = ["y"]\nanswer = "ho"\n', "faq[1].id: duplicate id 'a'"),
])
def test_bad_faq_files_name_file_and_key(fenliu_config_dir, toml, error):
    (fenliu_config_dir / "faq" / "zz_bad.toml").write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigErrors) as exc:
        load_config(fenliu_config_dir)
    assert f"{fenliu_config_dir / 'faq' / 'zz_bad.toml'}: {error}" in str(exc.value)


@pytest.mark.parametrize(("body", "error"), [
    ('[bot]\nwelcome = "{who}"\n', "bot.welcome: unknown placeholder `{who}`"),
    ('[bot]\nfaq_groups = ["nope"]\n', "bot.faq_groups[0]: no FAQ group 'nope'"),
    ('[bot]\nhandoff_words = ["人工", " "]\n', "bot.handoff_words[1]: empty keyword"),
    ('[bot]\nwhile_human = ["welcome"]\n', "bot.while_human[0]: invalid enum value 'welcome'"),
    ('[bot]\ngreeting = "hi"\n', "bot.greeting: unknown key"),
    ('[bot.shops."pdd-9999"]\nwelcome = "hi"\n', "bot.shops.pdd-9999: unknown shop 'pdd-9999'"),
    ('[bot.shops."pdd-1001"]\noffline = "{later}"\n', "bot.shops.pdd-1001.offline: unknown placeholder `{later}`"),
])
def test_bad_bot_sections_name_file_and_key(fenliu_config_dir, body, error):
    write_policy(fenliu_config_dir, body)
    with pytest.raises(ConfigErrors) as exc:
        load_config(fenliu_config_dir)
    assert f"{fenliu_config_dir / 'policies' / 'default.toml'}: {error}" in str(exc.value)


def test_bot_config_defaults_are_complete():
    cfg = msgspec.convert({}, bot.BotConfig)
    assert cfg.enabled and cfg.handoff_words == ("转人工", "人工", "客服", "真人")
    assert "aftersale" in cfg.handoff_skills and cfg.fallbacks == {"buyer": "亲"}


# -- end to end through `fenliu route` --------------------------------------------------------------


def route(config_dir, lines):
    text = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)
    r = run_fenliu("route", "--config", str(config_dir), "-", input=text)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def settle_everywhere(config_dir) -> None:
    """The demo's Pinduoduo shops on ``settle`` (the demo puts them on ``suggest``)."""
    policy = config_dir / "policies" / "default.toml"
    text = policy.read_text(encoding="utf-8")
    assert 'platform_modes = { pinduoduo = "suggest" }' in text
    policy.write_text(text.replace('platform_modes = { pinduoduo = "suggest" }', ""), encoding="utf-8")


def test_route_bot_conversation_end_to_end(tmp_path):
    config_dir = tmp_path / "config"
    shutil.copytree(ROOT / "config", config_dir)
    settle_everywhere(config_dir)
    buyer = {"nick": "小王"}
    order = {"order_id": "240101-88", "status": "shipped", "amount": 199.0, "goods": "羽绒服"}
    out = route(config_dir, [
        {"shop_id": "pdd-1001", "msg_id": "e-1", "buyer_id": "b-9", "text": "我的快递到哪了", "ts": T0, "buyer": buyer, "order": order},
        {"shop_id": "pdd-1001", "msg_id": "e-2", "buyer_id": "b-9", "text": "有运费险吗", "ts": T0 + 10},
        {"shop_id": "pdd-1001", "msg_id": "e-3", "buyer_id": "b-9", "text": "快递到哪了啊", "ts": T0 + 20},
        {"shop_id": "pdd-1001", "msg_id": "e-4", "buyer_id": "b-9", "text": "转人工", "ts": T0 + 30},
        {"shop_id": "pdd-1001", "msg_id": "e-5", "buyer_id": "b-10", "text": "在吗", "ts": NIGHT},
    ])
    base = {"shop_id": "pdd-1001", "cause": "message", "flags": []}
    assert out == [
        {**base, "msg_id": "e-1", "conversation_id": "pdd-1001:b-9", "action": "answered", "agent_id": None,
         "skill": "logistics", "priority": 0, "text": "我的快递到哪了", "flags": ["bot:settle:tracking"],
         "reply": "小王，您的订单240101-88已交给快递，在拼多多「我的订单」里点开订单就能看到实时物流哦~"},
        {**base, "msg_id": "e-2", "conversation_id": "pdd-1001:b-9", "action": "answered", "agent_id": None,
         "skill": "logistics", "priority": 0, "text": "有运费险吗", "flags": ["bot:settle:freight-insurance"],
         "reply": "亲，暖冬羽绒旗舰店的商品都赠送运费险，退货时运费险会按规则自动理赔到您的账户~"},
        {**base, "msg_id": "e-3", "conversation_id": "pdd-1001:b-9", "action": "assigned", "agent_id": "a-02",
         "skill": "logistics", "priority": 0, "text": "快递到哪了啊", "reply": REPEAT, "flags": ["bot:repeat:tracking"]},
        {**base, "msg_id": "e-4", "conversation_id": "pdd-1001:b-9", "action": "assigned", "agent_id": "a-02",
         "skill": "logistics", "priority": 0, "text": "转人工", "reply": None},
        {**base, "msg_id": "e-5", "conversation_id": "pdd-1001:b-10", "action": "queued", "agent_id": None,
         "skill": "presale", "priority": 0, "text": "在吗",
         "reply": "亲，您好！暖冬羽绒旗舰店的客服在线时间为每天08:00-23:00，您的留言已收到，上班后第一时间为您处理~"},
    ]


def test_route_sample_still_routes_every_message(demo_config):
    lines = [json.loads(line) for line in (DATA / "sample.jsonl").read_text(encoding="utf-8").splitlines()]
    out = route(demo_config, lines)
    by_id = {d["msg_id"]: d for d in out if d["cause"] == "message" and d["action"] != "duplicate"}
    # Pinduoduo: the answer goes to the agent's composer, the buyer to a human (3-minute rate)
    assert by_id["m-000001"]["action"] == "assigned" and by_id["m-000001"]["skill"] == "logistics"
    assert "bot:suggest:tracking" in by_id["m-000001"]["flags"]
    assert by_id["m-000003"]["skill"] == "aftersale" and by_id["m-000003"]["agent_id"] == "a-03"
    assert by_id["m-000008"]["action"] == "answered"  # Taobao settles
    assert by_id["m-000010"]["reply"] == REQUEST


def test_docs_name_every_key_and_placeholder():
    doc = (ROOT / "docs" / "plugins" / "bot.md").read_text(encoding="utf-8")
    for struct in (bot.BotConfig, bot.ShopTexts, bot.FaqEntry, bot.QuickReply, bot.FaqFile):
        for field in msgspec.structs.fields(struct):
            assert f"`{field.name}`" in doc or f"{field.name} =" in doc, field.name
    for name in bot.PLACEHOLDERS:
        assert f"`{{{name}}}`" in doc
