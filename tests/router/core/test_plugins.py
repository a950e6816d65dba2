"""Plugin loading, fault isolation and discovery through entry points."""

from __future__ import annotations

import json
import time

import anyio
import msgspec
import pytest

from router.core.hookspecs import hookimpl
from router.core.models import BotReply, FilterVerdict, Message
from router.core.plugins import BUILTIN_PLUGINS, PluginSet
from tests.conftest import T0

pytestmark = pytest.mark.anyio


class Raises:
    @hookimpl
    def fenliu_classify_skill(self, message, ctx):
        raise RuntimeError("kaboom")


class SlowAsync:
    @hookimpl
    async def fenliu_priority(self, message, ctx):
        await anyio.sleep(5)
        return 100


class SlowSync:
    @hookimpl
    def fenliu_priority(self, message, ctx):
        time.sleep(0.08)
        return 50


class AsyncBot:
    @hookimpl(tryfirst=True)
    async def fenliu_bot_reply(self, message, ctx):
        await anyio.sleep(0)
        return BotReply("亲,在的~", handoff=True) if "在吗" in message.text else None


class WrongType:
    @hookimpl
    def fenliu_inbound_filter(self, message, ctx):
        return "block please"


async def test_raising_and_slow_plugins_are_isolated(fenliu_harness, fenliu_logs):
    h = fenliu_harness(Raises(), SlowAsync(), SlowSync())
    d = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="这个有货吗")
    assert d.action == "assigned" and d.agent_id
    assert {"plugin_error:Raises-0", "plugin_error:SlowAsync-1", "plugin_error:SlowSync-2"} <= set(d.flags)
    assert d.priority == 0
    errors = {(e["plugin"], e["error"]) for e in fenliu_logs if e["event"] == "plugin_error"}
    assert errors == {("Raises-0", "RuntimeError"), ("SlowAsync-1", "timeout"), ("SlowSync-2", "timeout")}
    assert h.router.plugins.errors["Raises-0"] == 1


class CountingPriority:
    """Adds 1 to every message's priority and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def fenliu_priority(self, message, ctx):
        self.calls += 1
        return 1


async def test_dropped_calls_are_named_and_replay_skips_just_those(fenliu_harness):
    """The router names the calls whose results it dropped; ``replay_message`` leaves out exactly
    those (the counting plugin in the same chain still runs) and restores the chains after."""
    counting = CountingPriority()
    h = fenliu_harness(Raises(), SlowSync(), counting)
    router = h.router
    d = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="这个有货吗")
    assert sorted(router.dropped) == [("fenliu_classify_skill", "Raises-0"), ("fenliu_priority", "SlowSync-1")]
    assert d.priority == 1 and counting.calls == 1
    chains = (router.plugins.chain("fenliu_classify_skill"), router.plugins._skill, router.plugins._priority)
    msg = msgspec.convert({"shop_id": "pdd-1001", "buyer_id": "b-9", "text": "这个有货吗", "msg_id": "m-replay",
                           "ts": T0 + 100}, Message)
    start = time.perf_counter()
    out = await router.replay_message(msg, list(router.dropped))
    assert time.perf_counter() - start < 0.08  # SlowSync was not called
    own = out[-1]
    assert (own.skill, own.priority) == (d.skill, 1) and counting.calls == 2
    assert not any(f.startswith("plugin_error") for f in own.flags) and router.dropped == []
    assert (router.plugins.chain("fenliu_classify_skill"), router.plugins._skill, router.plugins._priority) == chains


async def test_async_hook_results_are_awaited(fenliu_harness):
    h = fenliu_harness(AsyncBot())
    d = await h.send(shop_id="pdd-1001", buyer_id="b-2", text="在吗")
    assert d.reply == "亲,在的~" and d.action == "assigned"


async def test_a_plugin_written_against_the_first_contract_address_still_loads(fenliu_harness):
    """DESIGN.md named ``router/hookspecs.py``; the contract moved to the core layer."""
    from router import hookspecs as first_address

    class OldStyle:
        @first_address.hookimpl
        def fenliu_bot_reply(self, message, ctx):
            return BotReply("老地址的插件", handoff=True)

    h = fenliu_harness(OldStyle())
    d = await h.send(shop_id="pdd-1001", buyer_id="b-9", text="在吗")
    assert d.reply == "老地址的插件"


async def test_wrong_return_type_is_a_plugin_error(fenliu_harness):
    h = fenliu_harness(WrongType())
    d = await h.send(shop_id="pdd-1001", buyer_id="b-3", text="在吗")
    assert d.action != "blocked"
    assert "plugin_error:WrongType-0" in d.flags


async def test_block_wins_over_later_filters(fenliu_harness):
    class Block:
        @hookimpl
        def fenliu_inbound_filter(self, message, ctx):
            return FilterVerdict("block", reason="test", flags=("test:block",))

    h = fenliu_harness(Block())
    d = await h.send(shop_id="pdd-1001", buyer_id="b-4", text="随便")
    assert d.action == "blocked" and d.agent_id is None and d.text is None
    assert "test:block" in d.flags


class SlowMask:
    """A blocking inbound filter that answers past the 50 ms budget (a busy machine)."""

    @hookimpl
    def fenliu_inbound_filter(self, message, ctx):
        time.sleep(0.08)
        return FilterVerdict("mask", text=ctx.text.replace("秘密", "＊＊"), flags=("test:mask",))


class SlowBlock:
    @hookimpl
    def fenliu_inbound_filter(self, message, ctx):
        time.sleep(0.08)
        return FilterVerdict("block", reason="test", flags=("test:block",))


async def test_a_late_inbound_verdict_is_kept_not_dropped(fenliu_harness, fenliu_logs):
    """An inbound filter that overruns its budget has already spent the time: dropping its verdict
    would only show the agent what it masks, or route what it blocks. The verdict is kept, the
    overrun logged, counted and flagged, and a replay applies it as the live run did."""
    h = fenliu_harness(SlowMask())
    d = await h.send(shop_id="pdd-1001", buyer_id="b-slow", text="告诉你一个秘密")
    assert d.text == "告诉你一个＊＊" and "test:mask" in d.flags
    assert "plugin_error:SlowMask-0" in d.flags and h.router.plugins.errors["SlowMask-0"] == 1
    assert h.router.dropped == []
    assert any(e["event"] == "plugin_error" and e["plugin"] == "SlowMask-0" and e["error"] == "timeout"
               for e in fenliu_logs)
    msg = msgspec.convert({"shop_id": "pdd-1001", "buyer_id": "b-slow2", "text": "告诉你一个秘密",
                           "msg_id": "m-slow-replay", "ts": T0 + 100}, Message)
    again = (await h.router.replay_message(msg, list(h.router.dropped)))[-1]
    assert again.text == "告诉你一个＊＊"

    blocked = await fenliu_harness(SlowBlock()).send(shop_id="pdd-1001", buyer_id="b-slow3", text="随便")
    assert blocked.action == "blocked" and blocked.text is None


def test_builtins_are_registered_in_order():
    ps = PluginSet.load()
    names = [i.name for i in ps.infos if i.origin == "builtin"]
    assert names == [m.rsplit(".", 1)[1] for m in BUILTIN_PLUGINS]
    assert {"round_robin", "least_load", "weighted"} <= set(ps.strategies)


def test_chains_follow_pluggy_order():
    class First:
        @hookimpl(tryfirst=True)
        def fenliu_priority(self, message, ctx):
            return 1

    class Last:
        @hookimpl(trylast=True)
        def fenliu_priority(self, message, ctx):
            return 2

    ps = PluginSet.load(extra=[Last(), First()])
    chain = ps.chain("fenliu_priority")
    assert chain[0] == "First-1" and chain[-1] == "Last-0"


def _enable(cfg, names):
    path = cfg / "fenliu.toml"
    path.write_text(path.read_text(encoding="utf-8").replace("enabled = []", f"enabled = {json.dumps(names)}"), encoding="utf-8")


def test_example_plugin_loads_through_its_entry_point(fenliu, fenliu_config_dir):
    _enable(fenliu_config_dir, ["example"])
    r = fenliu("plugins", "--config", str(fenliu_config_dir), "--json")
    assert r.returncode == 0, r.stderr
    info = {p["name"]: p for p in json.loads(r.stdout)}
    assert info["example"]["status"] == "loaded"
    assert info["example"]["origin"].startswith("entry point (fenliu-example-plugin")
    assert info["example"]["hooks"] == ["fenliu_assigned", "fenliu_policy_sections", "fenliu_priority", "fenliu_strategies"]
    line = json.dumps({"shop_id": "pdd-1001", "msg_id": "m1", "buyer_id": "b1", "text": "加急!今天能发货吗", "ts": T0})
    r = fenliu("route", "--config", str(fenliu_config_dir), input=line)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert "example:rush:加急" in d["flags"] and d["priority"] >= 5


def test_plugins_command_lists_builtins_and_example(fenliu, demo_config):
    r = fenliu("plugins", "--config", str(demo_config))
    assert r.returncode == 0, r.stderr
    for name in ("sensitive", "bot", "skills", "vip", "round_robin", "least_load", "weighted", "example"):
        assert name in r.stdout
    assert "fenliu_priority" in r.stdout and "not enabled" in r.stdout


def test_example_strategy_is_usable_in_a_policy(fenliu, fenliu_config_dir):
    _enable(fenliu_config_dir, ["example"])
    pol = fenliu_config_dir / "policies/default.toml"
    pol.write_text(pol.read_text(encoding="utf-8").replace('strategy = "round_robin"', 'strategy = "fewest_today"'), encoding="utf-8")
    r = fenliu("check", "--config", str(fenliu_config_dir))
    assert r.returncode == 0, r.stderr


def test_broken_third_party_plugin_is_skipped_not_fatal(fenliu, fenliu_config_dir, tmp_path):
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('missing dependency foo')\n")
    _enable(fenliu_config_dir, ["broken_plugin"])
    env = {"PYTHONPATH": str(tmp_path)}
    r = fenliu("check", "--config", str(fenliu_config_dir), env=env)
    assert r.returncode == 0
    assert "warning: plugin broken_plugin: failed: ImportError: missing dependency foo" in r.stderr
    line = json.dumps({"shop_id": "pdd-1001", "msg_id": "m1", "buyer_id": "b1", "text": "在吗", "ts": T0})
    r = fenliu("route", "--config", str(fenliu_config_dir), input=line, env=env)
    assert r.returncode == 0
    assert json.loads(r.stdout.splitlines()[0])["msg_id"] == "m1"
    assert "plugin_load_failed" in r.stderr


def test_configure_may_report_several_errors(fenliu_config_dir):
    from router.core.config import ConfigError, ConfigErrors, load_config

    class Picky:
        @hookimpl
        def fenliu_configure(self, config):
            raise ConfigErrors([ConfigError("a.toml", "x.y", "bad"), ConfigError("b.toml", "z", "worse")])

    with pytest.raises(ConfigErrors) as exc:
        load_config(fenliu_config_dir, PluginSet.load(extra=[Picky()]))
    assert [str(e) for e in exc.value.errors] == ["a.toml: x.y: bad", "b.toml: z: worse"]


async def test_outbound_check_fails_closed(fenliu_harness):
    class BrokenOutbound:
        @hookimpl
        def fenliu_outbound_filter(self, reply, ctx):
            raise RuntimeError("word list unavailable")

    h = fenliu_harness(BrokenOutbound())
    result = await h.check_reply("pdd-1001", "好的亲,马上为您发货")
    assert not result.ok
    assert "BrokenOutbound-0" in result.reason and "plugin_error:BrokenOutbound-0" in result.flags


def test_a_disabled_builtin_keeps_its_policy_sections_valid_and_runs_nothing(fenliu, fenliu_config_dir):
    """Switching a built-in off is one line in fenliu.toml: its sections in the policy files stay
    accepted (and validated), and the plugin does nothing."""
    main = fenliu_config_dir / "fenliu.toml"
    main.write_text(main.read_text(encoding="utf-8").replace("disabled = []", 'disabled = ["bot"]'), encoding="utf-8")
    assert "[bot]" in (fenliu_config_dir / "policies/default.toml").read_text(encoding="utf-8")
    r = fenliu("check", "--config", str(fenliu_config_dir))
    assert r.returncode == 0, r.stderr
    line = json.dumps({"shop_id": "pdd-1001", "msg_id": "m1", "buyer_id": "b1", "text": "在吗", "ts": T0})
    r = fenliu("route", "--config", str(fenliu_config_dir), input=line)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["reply"] is None  # no welcome: the bot is off
    pol = fenliu_config_dir / "policies/default.toml"
    pol.write_text(pol.read_text(encoding="utf-8").replace("[bot]", "[bot]\nwelcom = \"typo\"", 1), encoding="utf-8")
    r = fenliu("check", "--config", str(fenliu_config_dir))
    assert r.returncode == 1 and "bot.welcom: unknown key" in r.stderr


class _CollectorStall:
    """A ``gc.callbacks`` entry that, once armed, stalls the next collection for ``seconds``
    (a long pause of a big heap, made deterministic) and notes when it happened."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.armed = False
        self.at: float | None = None

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start" and self.armed:
            self.armed = False
            self.at = time.perf_counter()
            time.sleep(self.seconds)


async def test_a_collector_pause_inside_a_hook_does_not_drop_its_result(fenliu_harness, fenliu_logs):
    """The budget measures the hook, not the garbage collector: a 80 ms collection inside the
    sensitive filter (budget 50 ms) keeps its mask, or the inbound filter would fail open; a hook
    that is itself slow is still dropped."""
    import gc

    stall = _CollectorStall(0.08)
    marks: dict[str, float] = {}

    class Arm:  # registered after the built-ins, so called just before them
        @hookimpl
        def fenliu_inbound_filter(self, message, ctx):
            marks["armed"] = time.perf_counter()
            stall.armed = True
            gc.set_threshold(1)  # the sensitive filter's first allocation collects

    class After:
        @hookimpl(trylast=True)
        def fenliu_inbound_filter(self, message, ctx):
            gc.set_threshold(*threshold)
            marks["after"] = time.perf_counter()

    h = fenliu_harness(After(), Arm(), SlowSync())
    assert h.router.plugins.chain("fenliu_inbound_filter")[-2:] == ("sensitive", "After-0")
    threshold = gc.get_threshold()
    gc.callbacks.append(stall)
    try:
        d = await h.send(shop_id="pdd-1001", buyer_id="b-gc", text="加我微信聊")
    finally:
        gc.callbacks.remove(stall)
        gc.set_threshold(*threshold)
    assert stall.at is not None and marks["armed"] < stall.at < marks["after"]
    assert d.text == "加我＊＊聊" and "sensitive:微信" in d.flags
    assert "plugin_error:sensitive" not in d.flags and ("fenliu_inbound_filter", "sensitive") not in h.router.dropped
    assert "plugin_error:SlowSync-2" in d.flags and d.priority == 0
    assert {(e["plugin"], e["error"]) for e in fenliu_logs if e["event"] == "plugin_error"} == {("SlowSync-2", "timeout")}


async def test_exact_text_caches_answer_repeats_and_stay_bounded(fenliu_harness):
    """Buyers repeat 在吗 and 发货了吗: the plugins' pure text → result steps are cached by exact
    text (counted per cache), a repeat routes exactly as the first did, a long text is not kept,
    and a cache holds at most its size."""
    from router.core.textcache import TEXT_CACHE_MAX_CHARS, text_cache, text_cache_stats

    h = fenliu_harness()
    # a presale question (the bot's words and FAQ), an after-sale one (VIP urgency words)
    for n, (text, caches) in enumerate((("什么时候发货，加我微信聊", ("sensitive", "skills", "bot", "bot_words")),
                                        ("我要退款，再不处理就投诉", ("sensitive", "skills", "vip")))):
        first = await h.send(shop_id="pdd-1001", buyer_id=f"b-c{n}", text=text)
        before = text_cache_stats()
        again = await h.send(shop_id="pdd-1001", buyer_id=f"b-d{n}", text=text)
        after = text_cache_stats()
        for name in caches:
            assert after[name][0] > before[name][0], name  # a hit
            assert after[name][1] == before[name][1], name  # no miss
        assert (again.action, again.text, again.skill, again.priority, again.flags) == (
            first.action, first.text, first.skill, first.priority, first.flags)
    long = "在吗" * TEXT_CACHE_MAX_CHARS
    await h.send(shop_id="pdd-1001", buyer_id="b-c3", text=long)
    await h.send(shop_id="pdd-1001", buyer_id="b-c4", text=long)
    assert text_cache_stats()["sensitive"][2] == after["sensitive"][2]

    calls = []
    upper = text_cache(lambda t: calls.append(t) or t.upper(), "test", size=2)
    assert [upper(t) for t in ("a", "b", "a", "c", "a")] == ["A", "B", "A", "C", "A"]
    assert calls == ["a", "b", "c"] and upper.cache_info().currsize == 2  # type: ignore[attr-defined]


class WrongBot:
    @hookimpl
    def fenliu_bot_reply(self, message, ctx):
        return "not a BotReply"


class TextPriority:
    @hookimpl
    def fenliu_priority(self, message, ctx):
        return "7"


def _inbound_contexts(h, **fields):
    """A message of ``fields`` and a maker of its hook context, as ``handle_message`` builds it."""
    from router.core.context import HookContext

    r = h.router
    msg = msgspec.convert({"msg_id": "m-x", "ts": T0 + 5, **fields}, Message)
    shop, d = r.config.shops[msg.shop_id], r.dispatcher
    conv = d.conversations.get(f"{msg.shop_id}:{msg.buyer_id}")
    return msg, lambda: HookContext(r.config, shop, d.now or T0, conv, d, msg.text, r.config.policy_for(shop.id))


async def _awaited(plugins, msg, ctx):
    """The routing hooks as ``handle_message`` awaits them one loop at a time."""
    verdict = await plugins.inbound_filter(msg, ctx) if plugins._filter else None
    if verdict is not None and verdict.action == "block":
        return verdict
    skill = await plugins.classify_skill(msg, ctx) if plugins._skill else None
    ctx.skill = skill or ctx.skill or ctx.policy.dispatch.default_skill
    if plugins._priority:
        ctx.priority = await plugins.priority(msg, ctx)
    return await plugins.bot_reply(msg, ctx) if plugins._bot else None


async def _both_ways(h, **fields):
    """What the awaited loops and ``plugins.inbound`` make of one message, on fresh contexts."""
    plugins = h.router.plugins
    msg, make = _inbound_contexts(h, **fields)
    out = []
    for run in ("awaited", "plain"):
        ctx = make()
        before = dict(plugins.errors)
        result = await _awaited(plugins, msg, ctx) if run == "awaited" else plugins.inbound(msg, ctx)
        errors = {k: v - before.get(k, 0) for k, v in plugins.errors.items() if v != before.get(k, 0)}
        out.append((result, ctx.text, ctx.flags, ctx.skill, ctx.priority, ctx.dropped, ctx.meta, errors))
    return out


async def test_the_plain_inbound_call_decides_as_the_awaited_loops_do(fenliu_harness):
    """The demo's built-ins run in one plain call when nothing else implements a routing hook,
    with the same verdicts, skills, priorities, flags, replies and bot memory as the loops."""
    h = fenliu_harness()
    assert h.router.plugins.plain_routing
    await h.send(shop_id="pdd-1001", buyer_id="b-open", text="在吗")
    vip = {"nick": "小王", "tags": ["svip"], "level": 6, "lifetime_spend": 30000}
    order = {"order_id": "o-1", "status": "shipped", "amount": 2500, "goods": "羽绒服"}
    cases = [dict(text=t) for t in ("在吗", "什么时候发货", "加我微信聊", "我要退款，再不处理就投诉", "你们是骗子", "转人工",
                                    "你妈的", "到底什么时候发货")]
    cases += [dict(text="我要退款，急", buyer=vip, order=order), dict(text="什么时候发货", buyer=vip),
              dict(text="这个有货吗", kind="image")]
    for shop, buyer in (("pdd-1001", "b-new"), ("pdd-1002", "b-new"), ("tb-2001", "b-new"), ("pdd-1001", "b-open")):
        for case in cases:
            awaited, plain = await _both_ways(h, shop_id=shop, buyer_id=buyer, **case)
            assert plain == awaited, (shop, buyer, case)


async def test_the_plain_inbound_call_isolates_faults_as_the_awaited_loops_do(fenliu_harness, fenliu_logs):
    """Raising, overrunning and wrongly typed implementations are dropped, flagged and named in
    ``ctx.dropped`` by the plain call as by the loops; a late inbound verdict is kept. (The
    pipeline makes the plain call only for built-ins; it is made here on these plugins' chains.)"""
    h = fenliu_harness(Raises(), SlowSync(), WrongType(), WrongBot(), TextPriority(), SlowMask())
    plugins = h.router.plugins
    assert not plugins.plain_routing  # a third-party routing hook: the loops run
    awaited, plain = await _both_ways(h, shop_id="pdd-1001", buyer_id="b-f", text="告诉你一个秘密，我要退款")
    assert plain == awaited
    result, text, flags, skill, priority, dropped, _, errors = plain
    assert text == "告诉你一个＊＊，我要退款" and "test:mask" in flags
    assert {"plugin_error:Raises-0", "plugin_error:SlowSync-1", "plugin_error:WrongType-2", "plugin_error:WrongBot-3",
            "plugin_error:SlowMask-5"} <= set(flags)
    assert set(dropped) == {("fenliu_classify_skill", "Raises-0"), ("fenliu_priority", "SlowSync-1"),
                            ("fenliu_inbound_filter", "WrongType-2"), ("fenliu_bot_reply", "WrongBot-3")}
    assert skill == "aftersale" and priority >= 7 and isinstance(result, BotReply)
    assert errors == {"Raises-0": 1, "SlowSync-1": 1, "WrongType-2": 1, "WrongBot-3": 1, "SlowMask-5": 1}


def test_plain_routing_only_with_builtin_routing_hooks(fenliu_harness):
    assert fenliu_harness().router.plugins.plain_routing
    assert not fenliu_harness(AsyncBot()).router.plugins.plain_routing
    assert not fenliu_harness(WrongType()).router.plugins.plain_routing


async def test_staffed_is_open_and_someone_online(fenliu_harness):
    h = fenliu_harness()
    await h.send(shop_id="pdd-1001", buyer_id="b-s", text="在吗")
    for shop in ("pdd-1001", "pdd-1002", "tb-2001"):
        for now in (T0, T0 + 5, T0 + 12 * 3600):
            _, make = _inbound_contexts(h, shop_id=shop, buyer_id="b-s", text="x")
            ctx = make()
            ctx.now = now
            assert ctx.staffed() == (ctx.in_business_hours() and ctx.agents_available() > 0)
