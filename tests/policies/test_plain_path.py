"""A router with no hook to call routes messages through ``Router.route_plain``, and one with
no observer applies events through ``apply_plain`` (no coroutine, no hook context): their
decisions must be exactly those of the general path, for any stream of messages and events."""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core.config import load_config
from router.core.hookspecs import hookimpl
from router.core.models import AgentStatusEvent, Buyer, CloseEvent, Message, TickEvent, TransferEvent
from router.core.pipeline import InputError, Router
from router.core.plugins import PluginSet
from tests.conftest import ROOT, T0
from tests.policies.conftest import agents_toml, policy, write_config
from tests.policies.test_invariants import SHOPS, SKILLS, agent_st

op_st = st.one_of(
    st.tuples(st.just("msg"), st.sampled_from(["s1", "s2", "nope"]), st.integers(0, 12), st.integers(0, 40)),
    st.tuples(st.just("close"), st.integers(0, 50)),
    st.tuples(st.just("status"), st.integers(0, 5), st.sampled_from(["online", "break", "offline"])),
    st.tuples(st.just("transfer_agent"), st.integers(0, 50), st.integers(0, 5)),
    st.tuples(st.just("transfer_skill"), st.integers(0, 50), st.sampled_from(SKILLS)),
    st.tuples(st.just("tick"), st.integers(1, 200)),
    st.tuples(st.just("untimed"), st.integers(0, 12)),
)


def build(root: Path, agents: list[dict], strategies: tuple[str, str], tagging: bool = False) -> Path:
    """No plugins at all; with ``tagging``, a skill and a priority hook (no observer)."""
    targets = '[{ skills = ["@skill"], timeout_s = 30 }, { skills = ["@skill", "presale"], timeout_s = 60 }, { skills = ["presale", "aftersale", "logistics"] }]'
    extra = 'on_agent_offline = "reroute"\nsticky_hours = 0.01'  # 36 s: when a close happened matters
    everyone = {"skills": SKILLS, "shops": ["s1"], "max_concurrent": 1, "weight": 1}
    write_config(root, SHOPS, agents_toml(*({"id": f"a{i}", **a} for i, a in enumerate([*agents, everyone]))),
                 {"p": policy(strategies[0], extra, targets), "q": policy(strategies[1], extra, targets)})
    if not tagging:
        (root / "fenliu.toml").write_text('[plugins]\ndisabled = ["sensitive", "bot", "skills", "vip"]\n',
                                          encoding="utf-8")
    return root


async def run(router: Router, ops: list[tuple]) -> list[bytes]:
    """Every decision encoded, every refusal's reason and the clock after each input, in order."""
    d = router.dispatcher
    now = T0
    out: list[bytes] = []
    await router.handle_event(TickEvent(now))  # the clock starts here, not at the wall clock's time
    for n, op in enumerate(ops):
        now += 1
        kind = op[0]
        try:
            if kind == "msg":  # msg_id repeats: duplicates
                text = f"[{SKILLS[op[3] % 3]}] !{op[3] % 4} 你好"  # read by the tagging plugin only
                got = await router.handle_message(Message(op[1], f"m{op[3]}", f"b{op[2]}", text, ts=now))
            elif kind == "untimed":
                got = await router.handle_message(Message("s1", f"u{n}", f"b{op[1]}", "在吗"))
            elif kind == "close":
                got = await router.handle_event(CloseEvent(f"s1:b{op[1] % 13}", ts=now))
            elif kind == "status":
                got = await router.handle_event(AgentStatusEvent(sorted(d.agents)[op[1] % len(d.agents)], op[2], ts=now))
            elif kind == "transfer_agent":
                to = sorted(d.agents)[op[2] % len(d.agents)]
                got = await router.handle_event(TransferEvent(f"s1:b{op[1] % 13}", to_agent=to, ts=now))
            elif kind == "transfer_skill":
                got = await router.handle_event(TransferEvent(f"s2:b{op[1] % 13}", to_skill=op[2], ts=now))
            else:
                now += op[1]
                got = await router.handle_event(TickEvent(now))
        except InputError as exc:
            out.append(f"error: {exc}".encode())
            got = []
        out.extend(msgspec.json.encode(x) for x in got)
        out.append(f"clock {d.now}".encode())
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    agents=st.lists(agent_st, min_size=1, max_size=6),
    strategies=st.tuples(st.sampled_from(["round_robin", "least_load", "weighted"]),
                         st.sampled_from(["round_robin", "least_load", "weighted"])),
    ops=st.lists(op_st, min_size=1, max_size=80),
    tagging=st.booleans(),
)
def test_the_plain_path_decides_as_the_general_one(agents, strategies, ops, tagging):
    with tempfile.TemporaryDirectory(prefix="fenliu-plain-") as tmp:
        config = load_config(build(Path(tmp), agents, strategies, tagging))
    plain, general = Router(config), Router(config)
    assert plain.quiet and plain.plain is not tagging
    general.plain = general.quiet = False  # the hook loops (empty or not) and events' general path
    assert anyio.run(run, plain, ops) == anyio.run(run, general, ops)
    assert plain.dropped == general.dropped


def test_a_router_with_a_hook_is_not_plain():
    with tempfile.TemporaryDirectory(prefix="fenliu-plain-") as tmp:
        root = build(Path(tmp), [{"skills": ["presale"], "shops": ["*"], "max_concurrent": 1, "weight": 1}],
                     ("least_load", "least_load"), tagging=True)
        router = Router(load_config(root))
    assert router.quiet and not router.plain


TEXTS = ["在吗?这件有货吗", "我的快递到哪了", "我要退款,东西坏了", "能便宜点吗", "什么时候发货", "尺码怎么选",
         "加我微信 abc123 聊", "这是全网最好的吗", "急!!!还没发货", "你们是骗子", "订单 123456 怎么还没到"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(st.sampled_from(["pdd-1001", "pdd-1002", "tb-2001"]), st.integers(0, 6),
                              st.integers(0, len(TEXTS) - 1), st.booleans(),
                              st.sampled_from([(), ("vip",), ("svip",)])), min_size=1, max_size=40))
def test_the_built_ins_in_one_call_decide_as_their_loops(ops):
    """With the demo's real rules every routing hook is a built-in function, so a message's hooks
    run in one plain call (``PluginSet.inbound``): same decisions, flags, masks, replies and
    dropped calls as the awaited loops, on any stream."""
    config = load_config(ROOT / "config")
    plugins = config.plugins
    assert plugins.plain_routing

    async def route(plain: bool) -> list[bytes]:
        plugins.plain_routing = plain
        router = Router(config)
        out: list[bytes] = []
        for n, (shop, buyer, text, close, tags) in enumerate(ops):
            ts = T0 + n
            who = Buyer(tags=tags) if tags else None
            got = await router.handle_message(Message(shop, f"m{n}", f"b{buyer}", TEXTS[text], ts=ts, buyer=who))
            if close:
                try:
                    got += await router.handle_event(CloseEvent(f"{shop}:b{buyer}", ts=ts + 0.5))
                except InputError as exc:  # the bot answered it: no conversation with an agent
                    out.append(f"error: {exc}".encode())
            out.extend(msgspec.json.encode(x) for x in got)
            out.append(repr(router.dropped).encode())
        return out

    try:
        # without the budget: a loaded machine made the first run's first filter call (building
        # its automaton) overrun, so the two runs differed by a timing flag, not by a decision
        with plugins.without_budget():
            assert anyio.run(route, True) == anyio.run(route, False)
    finally:
        plugins.plain_routing = True


def test_one_hook_context_for_every_message_only_while_no_hook_could_keep_it():
    """With the demo's built-in hooks and no observer the router rebinds one hook context for
    every message (``HookContext.rebind``), each message with its own flags and dropped lists
    (the decision and the journal keep them); with an observer, which may keep what it is
    given, every message gets a context of its own, made as before."""
    config = load_config(ROOT / "config")
    assert config.plugins.plain_routing and not config.plugins.has_observers
    router = Router(config)

    async def two(router: Router) -> list:
        kept = []
        for n in range(2):
            got = await router.handle_message(Message("pdd-1001", f"m{n}", f"b{n}", "加我微信 abc123 聊", ts=T0 + n))
            kept.append((got[-1].flags, router.dropped))
        return kept

    (flags1, dropped1), (flags2, dropped2) = anyio.run(two, router)
    assert flags1 == flags2 and flags1 and flags1 is not flags2 and dropped1 is not dropped2
    assert router._context.shop.id == "pdd-1001" and router._context.conversation is None

    contexts = []

    class Keeper:
        @hookimpl
        def fenliu_assigned(self, decision, ctx):
            contexts.append(ctx)

    observed = Router(load_config(ROOT / "config", PluginSet.load(extra=[Keeper()])))
    assert observed.plugins.has_observers
    anyio.run(two, observed)
    assert len(contexts) == 2 and contexts[0] is not contexts[1] and contexts[0] is not observed._context
    assert (contexts[0].now, contexts[1].now) == (T0, T0 + 1)  # each still the one its message was given
