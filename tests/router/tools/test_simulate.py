"""``fenliu simulate``: the real router under simulated buyers and agents.

The assertions rest on ideas that hold whatever the built-in plugins and demo policies become:
a hand-computed trace on a plugin-free config, relative comparisons between strategies, and
reproducibility.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from router.tools.simulate_measures import gini, percentile

DATA = Path(__file__).resolve().parents[2] / "data"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


def _figures(fenliu, *args: str) -> dict:
    r = fenliu("simulate", *args, "--json", "-")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _least_load_copy(tmp_path: Path) -> Path:
    target = tmp_path / "least_load"
    shutil.copytree(DATA / "sim_policy", target)
    policy = target / "policies" / "default.toml"
    policy.write_text(policy.read_text().replace('"round_robin"', '"least_load"'))
    return target


def test_three_minute_reply_rate_matches_a_hand_computed_trace(fenliu):
    """One agent (capacity 1), handle 100 s, first reply 10 s after assignment, patience 300 s:

    c1 07:58:00  assigned at once, replied 07:58:10 (10 s)   outside the 08:00–23:00 window
    c2 07:59:00  queued, assigned 07:59:40, replied +50 s    outside
    c3 08:00:30  queued, assigned 08:01:20, replied +60 s    in window, within 180 s
    c4 08:00:40  queued, assigned 08:03:00, replied +150 s   in window, within 180 s
    c5 08:00:50  queued, assigned 08:04:40, replied +240 s   in window, too late
    c6 08:01:00  queued; leaves at 08:06:00, 20 s before the agent frees up: abandoned
    c7 23:00:30  assigned at once, replied +10 s             outside (window ends 23:00)

    Rate = 2 of the 4 first messages in the window. Waits 10, 10, 50, 60, 150, 240.
    """
    doc = _figures(fenliu, "--config", str(DATA / "sim_trace"), "--traffic", str(DATA / "sim_trace.jsonl"),
                   "--scenario", str(DATA / "sim_trace.toml"))
    p = doc["policies"][0]
    assert p["reply_rate"]["eligible"] == 4
    assert p["reply_rate"]["replied_in_time"] == 2
    assert p["reply_rate"]["rate"] == 0.5
    assert p["abandoned"] == 1
    assert p["outcomes"]["human"] == 6
    assert p["wait_s"]["count"] == 6
    assert (p["wait_s"]["p50"], p["wait_s"]["p90"], p["wait_s"]["max"]) == (50, 240, 240)
    assert p["queue"]["max"] == {"presale": 4}
    assert p["agents"]["a-1"]["handled"] == 6


def test_least_load_evens_out_utilisation_round_robin_evens_out_counts(fenliu, tmp_path):
    """Six agents whose handle times differ up to 9× (``agents.speed``), same seeded traffic.

    round_robin gives each available agent the next chat in turn, so counts are even and the
    slow agents sit on more open chats (utilisation spreads). least_load gives the next chat
    to whoever has the fewest open, so the fast agents, who free up sooner, take more chats:
    counts spread, utilisation evens out.
    """
    doc = _figures(fenliu, "--config", str(DATA / "sim_policy"), "--compare", str(_least_load_copy(tmp_path)),
                   "--scenario", str(DATA / "sim_policy.toml"))
    rr, ll = doc["policies"]
    assert set(rr["strategies"].values()) == {"round_robin"}
    assert set(ll["strategies"].values()) == {"least_load"}
    assert rr["conversations"] == ll["conversations"] > 300
    assert ll["load_spread"]["utilisation_gini"] < rr["load_spread"]["utilisation_gini"]
    assert ll["load_spread"]["utilisation_max_minus_min"] < rr["load_spread"]["utilisation_max_minus_min"]
    assert rr["load_spread"]["handled_gini"] < ll["load_spread"]["handled_gini"]
    assert rr["load_spread"]["handled_max_minus_min"] < ll["load_spread"]["handled_max_minus_min"]
    fast, slow = "a-1", "a-6"
    assert ll["agents"][fast]["handled"] > rr["agents"][fast]["handled"]
    assert ll["agents"][slow]["handled"] < rr["agents"][slow]["handled"]


def test_same_seed_gives_byte_identical_json(fenliu, tmp_path):
    """The demo config with every plugin, reservations and transfers; runs in separate processes
    with different hash seeds."""
    scenario = tmp_path / "short.toml"
    scenario.write_text('duration_h = 5\nstart = 2025-11-11\n[traffic]\nconversations_per_shop = 600\n'
                        'bursts = [{ start = "02:00", end = "03:00", multiplier = 4 }]\n')
    outs = []
    for i, seed in enumerate(("5", "5", "6")):
        out = tmp_path / f"run{i}.json"
        r = fenliu("simulate", "--config", "config", "--scenario", str(scenario), "--seed", seed, "--json", str(out))
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]
    doc = json.loads(outs[0])
    assert doc["scenario"]["seed"] == 5
    assert doc["policies"][0]["messages"] > doc["policies"][0]["conversations"] > 0


@pytest.mark.parametrize(("text", "expected"), [
    (None, "sim_bad_scenario.toml: traffic.mixx: unknown key"),
    ('[buyers]\npatience_s = { dist = "weibull", k = 2 }\n',
     "buyers.patience_s.dist: expected one of fixed, exponential, lognormal, empirical; got 'weibull'"),
    ("[handle_s]\npresale = { dist = \"lognormal\", median = -5 }\n", "handle_s.presale.median: expected float > 0.0"),
    ('[traffic]\nshops = ["shop-1", "nope"]\n', "traffic.shops[1]: unknown shop 'nope'"),
    ("[traffic]\nhourly_profile = [1, 2]\n", "traffic.hourly_profile: expected 24 values (one per hour), got 2"),
    ("[metrics]\nwindow_start = \"8am\"\n", "metrics.window_start: expected str matching regex"),
])
def test_a_bad_scenario_is_reported_with_file_and_key_path(fenliu, tmp_path, text, expected):
    path = DATA / "sim_bad_scenario.toml"
    if text is not None:
        path = tmp_path / "bad.toml"
        path.write_text(text)
    r = fenliu("simulate", "--config", str(DATA / "sim_trace"), "--scenario", str(path))
    assert r.returncode == 1
    assert r.stderr.startswith(f"{path}: ")
    assert expected in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_bad_traffic_lines_are_reported(fenliu, tmp_path):
    traffic = tmp_path / "t.jsonl"
    traffic.write_text('{"shop_id": "shop-1", "msg_id": "m-1", "buyer_id": "b", "ts": 1762819080}\n'
                       '{"shop_id": "shop-1", "msg_id": "m-2"}\n'
                       '{"shop_id": "shop-1", "msg_id": "m-3", "buyer_id": "b"}\n')
    r = fenliu("simulate", "--config", str(DATA / "sim_trace"), "--traffic", str(traffic))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"{traffic}: line 2: missing required field 'buyer_id'",
                                     f"{traffic}: line 3: ts: needed to simulate"]


def test_recorded_agent_going_offline_reroutes_through_the_dispatcher(fenliu, tmp_path):
    config = tmp_path / "two"
    shutil.copytree(DATA / "sim_trace", config)
    (config / "agents.toml").write_text('[[agents]]\nid = "a-1"\nskills = ["presale"]\nmax_concurrent = 1\n\n'
                                        '[[agents]]\nid = "a-2"\nskills = ["presale"]\nmax_concurrent = 1\n')
    traffic = tmp_path / "t.jsonl"
    traffic.write_text('{"shop_id": "shop-1", "msg_id": "m-1", "buyer_id": "b1", "ts": 1762819080}\n'
                       '{"type": "agent_status", "agent_id": "a-1", "status": "offline", "ts": 1762819082}\n'
                       '{"shop_id": "shop-1", "msg_id": "m-2", "buyer_id": "b2", "ts": 1762819300}\n')
    doc = _figures(fenliu, "--config", str(config), "--traffic", str(traffic), "--scenario", str(DATA / "sim_trace.toml"))
    p = doc["policies"][0]
    assert p["reroutes"]["agent_offline"] == 1
    assert p["agents"]["a-1"]["handled"] == 0
    assert p["agents"]["a-2"]["handled"] == 2
    assert p["wait_s"]["max"] == 12


def test_gini_and_percentile():
    assert gini([5, 5, 5, 5]) == 0
    assert gini([0, 0, 0, 12]) == pytest.approx(0.75)
    assert percentile([10, 20, 30, 40, 50], 50) == 30
    assert percentile([10, 20, 30, 40, 50], 90) == 50
    assert percentile([], 50) is None


@pytest.mark.browser
@pytest.mark.slow
def test_html_report_renders_in_headless_chromium(fenliu, tmp_path, chromium_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    report = tmp_path / "report.html"
    r = fenliu("simulate", "--config", str(DATA / "sim_policy"), "--compare", str(_least_load_copy(tmp_path)),
               "--scenario", str(DATA / "sim_policy.toml"), "--report", str(report))
    assert r.returncode == 0, r.stderr
    page_html = report.read_text(encoding="utf-8")
    assert "<script" not in page_html and "<link" not in page_html and 'src="' not in page_html
    executable = chromium_path
    shot = tmp_path / "report.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(executable), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(report.as_uri())
            assert page.locator("svg").count() == 3
            assert page.locator("h1").inner_text().startswith("Fenliu policy simulation")
            header = page.locator("table").first.locator("thead").inner_text()
            assert "sim_policy" in header and "least_load" in header
            box = page.locator("svg").first.bounding_box()
            assert box is not None and box["width"] > 400 and box["height"] > 150
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 20_000


def test_plugin_time_budgets_do_not_change_a_simulation(fenliu, tmp_path):
    """On a virtual clock a wall-clock overrun (a GC pause, a busy machine) would drop a plugin's
    result and change the figures: the simulator runs without budgets, so even a budget every
    hook overruns gives the same figures as the default."""
    scenario = tmp_path / "short.toml"
    scenario.write_text('duration_h = 3\nstart = 2025-11-11\n[traffic]\nconversations_per_shop = 300\n')
    tight = tmp_path / "tight"
    shutil.copytree("config", tight)
    main = (tight / "fenliu.toml").read_text(encoding="utf-8")
    assert "hook_timeout_ms = 50" in main
    (tight / "fenliu.toml").write_text(main.replace("hook_timeout_ms = 50", "hook_timeout_ms = 0.0001"), encoding="utf-8")
    normal = _figures(fenliu, "--config", "config", "--scenario", str(scenario), "--seed", "3")
    squeezed = _figures(fenliu, "--config", str(tight), "--scenario", str(scenario), "--seed", "3")
    assert normal["policies"][0]["messages"] > 0

    def figures(doc: dict) -> list[dict]:
        return [{k: v for k, v in p.items() if k not in ("config", "policy")} for p in doc["policies"]]

    assert figures(squeezed) == figures(normal)


# -- issue 17: a faithful simulator ----------------------------------------------------------------

T0 = 1762819200.0  # 2025-11-11 08:00 Asia/Shanghai
PEOPLE_OFF = ('after_chat_s = { dist = "fixed", value = 0 }\nload = { reply_per_chat = 0, handle_per_chat = 0 }\n'
              'breaks = { enabled = false }\n')


def _sim(config: Path, scenario: str, tmp_path: Path, traffic: list[dict] | None = None, seed: int | None = None,
         sim_class: type | None = None) -> dict:
    """One policy in-process: ``scenario`` is TOML text, ``traffic`` recorded lines."""
    import anyio

    from router.core.config import load_config
    from router.tools.scenario import load_scenario
    from router.tools.simulate import Simulation
    from router.tools.simulate_traffic import build_traffic

    cfg = load_config(config)
    path = tmp_path / "scenario.toml"
    path.write_text(scenario)
    sc = load_scenario(path, cfg)
    tpath = None
    if traffic is not None:
        tpath = tmp_path / "traffic.jsonl"
        tpath.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in traffic))
    tr, bad = build_traffic(sc, cfg, sc.seed if seed is None else seed, tpath)
    assert not bad
    sim = (sim_class or Simulation)(cfg, sc, tr, sc.seed if seed is None else seed)
    return anyio.run(sim.run)


def _msg(buyer: str, ts: float, text: str = "你好", n: int = 0) -> dict:
    return {"shop_id": "shop-1", "msg_id": f"{buyer}-{n}", "buyer_id": buyer, "text": text, "ts": ts}


def _copy(tmp_path: Path, name: str, agents: str, policy: str | None = None) -> Path:
    target = tmp_path / name
    shutil.copytree(DATA / "sim_trace", target)
    (target / "agents.toml").write_text(agents)
    if policy is not None:
        (target / "policies" / "default.toml").write_text(policy)
    return target


def test_a_patience_of_days_does_not_stretch_the_run(tmp_path):
    """Fix 1: a served buyer's leave timer is dropped without moving the clock to it; with a
    patience of 10^6 s the day's run ends within the hour after its last arrival (the old
    simulator ran to the last stale timer: 301 hours, utilisation 0.7 % instead of 21 %)."""
    p = _sim(DATA / "sim_trace", '[traffic]\nconversations_per_shop = 240\n[buyers]\n'
             'patience_s = { dist = "fixed", value = 1e6 }\n[agents]\nreservations = false\n' + PEOPLE_OFF
             + '[handle_s]\ndefault = { dist = "fixed", value = 30 }\n', tmp_path)
    assert p["conversations"] > 0
    shift_h = p["agents"]["a-1"]["shift_h"]
    assert shift_h < 25.5, shift_h
    assert len(p["queue"]["series"].get("presale", [])) <= 24 * 12 + 12


def test_recorded_traffic_makes_no_conversation_the_buyers_never_had(tmp_path):
    """Fixes 3 and 4: the agent closes only after the buyer's last message, and a buyer who left
    writes no more; so the conversations are exactly the recorded ones, and every message of a
    buyer who never left is routed."""
    lines = []
    for b in range(30):
        for k in range(4):  # messages 0, 100, 200, 300 s apart: longer than a 100 s handle
            lines.append(_msg(f"b{b}", T0 + 40 * b + 100 * k, "在吗" if k else "你好", k))
    lines.sort(key=lambda x: x["ts"])
    agents = '[[agents]]\nid = "a-1"\nskills = ["presale"]\nmax_concurrent = 5\n'
    p = _sim(_copy(tmp_path, "c", agents), '[buyers]\npatience_s = { dist = "fixed", value = 1e5 }\n'
             '[agents]\nreservations = false\n' + PEOPLE_OFF + '[handle_s]\ndefault = { dist = "fixed", value = 100 }\n',
             tmp_path, lines)
    assert p["conversations"] == 30
    assert p["outcomes"]["human"] == 30
    assert p["messages"] == 120
    assert p["dropped_messages"] == 0


def test_synthetic_traffic_routes_every_message_of_a_buyer_who_stays(tmp_path):
    """Fix 4: on the sale day's message counts and gaps (mean 25 s), with buyers who never give
    up, no message is lost to an agent closing early."""
    import anyio

    from router.core.config import load_config
    from router.tools.scenario import load_scenario
    from router.tools.simulate import simulate
    from router.tools.simulate_traffic import build_traffic

    cfg = load_config(DATA / "sim_policy")
    path = tmp_path / "s.toml"
    path.write_text('duration_h = 3\n[traffic]\nconversations_per_shop = 1200\n'
                    'messages = { dist = "empirical", values = [1, 2, 3, 4, 6, 8] }\n'
                    '[buyers]\npatience_s = { dist = "fixed", value = 1e5 }\n'
                    '[handle_s]\npresale = { dist = "fixed", value = 40 }\n')
    sc = load_scenario(path, cfg)
    tr, _ = build_traffic(sc, cfg, 3, None)
    p = anyio.run(simulate, cfg, sc, tr, 3)
    assert p["messages"] == sum(len(c.times) for c in tr.conversations)
    assert p["dropped_messages"] == 0


class _Spy:
    """A Simulation that notes, per conversation, everything drawn about the buyer."""

    seen: dict[str, tuple] = {}

    @classmethod
    def make(cls):
        from router.tools.simulate import Simulation

        seen: dict[str, tuple] = {}

        class Spy(Simulation):
            def _record(self, conv, outcome):
                d = conv.draws.__class__(self.seed, conv.spec.key)
                seen[conv.spec.key] = (conv.patience, conv.handle_u, conv.transfer_u, conv.acw_u, conv.need,
                                       conv.spec.times, d.u())
                super()._record(conv, outcome)

        return Spy, seen


@pytest.mark.parametrize("recorded", [False, True])
def test_every_policy_meets_exactly_the_same_buyers(tmp_path, recorded):
    """Fix 2, common random numbers: patience, the work a chat needs and the agents' first
    delays come from a stream keyed by the seed and the conversation, so two policies (here
    round-robin and least-load, whose assignments differ) meet identical buyers, in synthetic and
    recorded mode alike; a different seed gives different buyers."""
    ll = _least_load_copy(tmp_path)
    scenario = (DATA / "sim_policy.toml").read_text().replace("duration_h = 6", "duration_h = 2")
    traffic = None
    if recorded:
        traffic = [_msg(f"b{i}", T0 + 9 * i, "在吗") for i in range(400)]
    runs = []
    for config in (DATA / "sim_policy", ll):
        spy, seen = _Spy.make()
        p = _sim(config, scenario, tmp_path, traffic, seed=7, sim_class=spy)
        runs.append((p, seen))
    (p1, b1), (p2, b2) = runs
    assert p1["agents"] != p2["agents"]  # the policies did differ
    assert len(b1) > 150
    assert b1 == b2
    spy, seen3 = _Spy.make()
    _sim(DATA / "sim_policy", scenario, tmp_path, traffic, seed=8, sim_class=spy)
    assert sum(seen3[k][1] == b1[k][1] for k in b1 if k in seen3) < len(b1) / 10


def test_first_reply_slows_with_each_open_chat(tmp_path):
    """Fix 5: five buyers at once, one agent with room for five, first reply 10 s at one open
    chat and +50 % per further chat: the k-th assigned waits 10·(1 + 0.5·(k−1)) s."""
    agents = '[[agents]]\nid = "a-1"\nskills = ["presale"]\nmax_concurrent = 5\n'
    lines = [_msg(f"b{i}", T0 + 0.001 * i) for i in range(5)]
    p = _sim(_copy(tmp_path, "c", agents), '[agents]\nreservations = false\nfirst_reply_s = { dist = "fixed", value = 10 }\n'
             'after_chat_s = { dist = "fixed", value = 0 }\nload = { reply_per_chat = 0.5, handle_per_chat = 0.25 }\n'
             'breaks = { enabled = false }\n[handle_s]\ndefault = { dist = "fixed", value = 100 }\n', tmp_path, lines)
    w = p["wait_s"]
    assert (w["count"], w["p50"], w["max"]) == (5, pytest.approx(20.002, abs=0.01), pytest.approx(30.004, abs=0.01))
    # the fifth chat's 100 s of work take 100·(1 + 0.25·4) = 200 s: the agent holds five chats
    # for ~200 s, so utilisation over the run is high although the chats are short
    assert p["agents"]["a-1"]["utilisation"] > 0.6


def test_after_chat_work_and_breaks_keep_the_agent_from_new_chats(tmp_path):
    """Fix 5: after-chat work holds the slot (the second buyer's first reply comes 100 + 20 + 10
    s after the first's arrival), and a buyer who writes during the agent's 小休 waits for its end."""
    agents = '[[agents]]\nid = "a-1"\nskills = ["presale"]\nmax_concurrent = 1\n'
    lines = [_msg("b1", T0), _msg("b2", T0), _msg("b3", T0 + 1000)]
    p = _sim(_copy(tmp_path, "c", agents), '[agents]\nreservations = false\nfirst_reply_s = { dist = "fixed", value = 10 }\n'
             'after_chat_s = { dist = "fixed", value = 20 }\nload = { reply_per_chat = 0, handle_per_chat = 0 }\n'
             'breaks = { every_s = { dist = "fixed", value = 900 }, length_s = { dist = "fixed", value = 600 } }\n'
             '[buyers]\npatience_s = { dist = "fixed", value = 3000 }\n'
             '[handle_s]\ndefault = { dist = "fixed", value = 100 }\n', tmp_path, lines)
    waits = sorted(p["wait_s"].get(k) for k in ("p50", "max"))
    # b1 10 s; b2 at 120 + 10 = 130 s; b3 arrives at 1000 s during the break 900–1500: 500 + 10 s
    assert p["wait_s"]["count"] == 3
    assert waits == [130, 510]
    assert p["breaks"] >= 1


def test_handle_time_follows_the_buyers_need_not_the_routers_skill(tmp_path):
    """Fix 6: the same buyers under a classifier that calls everything presale and one that
    calls everything aftersale cost the same work: handle times come from what they need."""
    agents = '[[agents]]\nid = "a-1"\nskills = ["presale", "aftersale"]\nmax_concurrent = 2\n'
    pol = '[dispatch]\nstrategy = "round_robin"\ndefault_skill = "{skill}"\nsticky_hours = 0\n'
    sc = ('duration_h = 3\n[traffic]\nconversations_per_shop = 300\nmix = { presale = 0.5, aftersale = 0.5 }\n'
          '[agents]\nreservations = false\n' + PEOPLE_OFF + '[handle_s]\npresale = { dist = "fixed", value = 60 }\n'
          'aftersale = { dist = "fixed", value = 300 }\n')
    a = _sim(_copy(tmp_path, "a", agents, pol.format(skill="presale")), sc, tmp_path, seed=4)
    b = _sim(_copy(tmp_path, "b", agents, pol.format(skill="aftersale")), sc, tmp_path, seed=4)
    assert a["agents"]["a-1"]["utilisation"] == b["agents"]["a-1"]["utilisation"]
    assert a["wait_s"] == b["wait_s"]


def test_a_chat_goes_to_the_skill_it_needs(tmp_path):
    """Fix 5: a chat the router sent to an agent without the needed skill is transferred to that
    skill (never a random one), and the agent with it closes it."""
    agents = ('[[agents]]\nid = "a-1"\nskills = ["presale"]\nmax_concurrent = 3\n\n'
              '[[agents]]\nid = "a-2"\nskills = ["aftersale"]\nmax_concurrent = 3\n')
    sc = ('duration_h = 2\n[traffic]\nconversations_per_shop = 200\nmix = { aftersale = 1.0 }\n'
          '[agents]\nreservations = false\ntransfer_share = 0\n' + PEOPLE_OFF)
    p = _sim(_copy(tmp_path, "c", agents), sc, tmp_path, seed=2)
    assert p["causes"]["transfer"] == p["need_transfers"] > 0
    assert p["agents"]["a-1"]["handled"] == 0
    assert p["agents"]["a-2"]["handled"] == p["outcomes"]["human"]


def test_gini_within_a_shift_and_waits_with_abandoned_buyers(tmp_path):
    """Fix 7: agents on a 4-hour and a 24-hour shift handle different numbers by design; the
    Gini within each shift is what a policy controls. Waits with buyers who gave up count them."""
    agents = "".join(f'[[agents]]\nid = "a-{i}"\nskills = ["presale"]\nmax_concurrent = 2\n'
                     + ('schedule = [{ days = "mon-sun", start = "08:00", end = "12:00" }]\n' if i > 2 else "") + "\n"
                     for i in range(1, 5))
    sc = ('start = 2025-11-11\nduration_h = 24\n[traffic]\nconversations_per_shop = 1500\n'
          '[agents]\nreservations = false\n' + PEOPLE_OFF)
    p = _sim(_copy(tmp_path, "c", agents), sc, tmp_path, seed=2)
    ls = p["load_spread"]
    assert len(ls["by_shift"]) == 2
    assert ls["handled_gini"] > 0.15
    assert ls["handled_gini_within_shift"] < 0.05
    assert p["abandoned"] > 0
    assert p["wait_all_s"]["count"] == p["wait_s"]["count"] + p["abandoned"]
    assert p["wait_all_s"]["p90"] > p["wait_s"]["p90"]
    assert p["groups"]["platform:pinduoduo"]["conversations"] == p["conversations"]


def erlang_c(c: int, a: float) -> float:
    """Erlang C, the probability that an arrival waits in M/M/c with offered load ``a = λ/μ``:

        C(c, a) = (a^c / c!) · 1/(1 − ρ)  /  ( Σ_{k<c} a^k / k!  +  (a^c / c!) · 1/(1 − ρ) ),   ρ = a / c
    """
    import math

    rho = a / c
    top = a ** c / math.factorial(c) / (1 - rho)
    return top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)


def _mmc_waits(tmp_path: Path, rho: float, hours: int, seeds: tuple[int, ...], c: int = 10, mean: float = 100.0) -> list[float]:
    import anyio

    from router.core.config import load_config
    from router.tools.scenario import load_scenario
    from router.tools.simulate import Simulation
    from router.tools.simulate_traffic import build_traffic

    lam = rho * c / mean
    agents = "".join(f'[[agents]]\nid = "a-{i}"\nskills = ["presale"]\nmax_concurrent = 1\n\n' for i in range(c))
    cfg = load_config(_copy(tmp_path, f"mmc{rho}", agents))
    path = tmp_path / "mmc.toml"
    path.write_text(f"duration_h = {hours}\n[traffic]\nconversations_per_shop = {lam * 86400}\n"
                    f"hourly_profile = [{', '.join(['1'] * 24)}]\nmessages = {{ dist = \"fixed\", value = 1 }}\n"
                    '[buyers]\npatience_s = { dist = "fixed", value = 1e9 }\n'
                    '[agents]\nreservations = false\ntransfer_share = 0\nfirst_reply_s = { dist = "fixed", value = 0 }\n'
                    + PEOPLE_OFF + f'[handle_s]\ndefault = {{ dist = "exponential", mean = {mean} }}\n')
    sc = load_scenario(path, cfg)
    waits: list[float] = []
    for seed in seeds:
        tr, _ = build_traffic(sc, cfg, seed, None)
        sim = Simulation(cfg, sc, tr, seed)
        anyio.run(sim.run)
        waits.extend(sim.waits)
    return waits


@pytest.mark.slow
@pytest.mark.parametrize(("rho", "hours", "seeds"), [(0.8, 480, (17, 18, 19)), (0.95, 240, (17,))])
def test_the_queueing_core_agrees_with_erlang_c(tmp_path, rho, hours, seeds):
    """M/M/c: c = 10 agents of capacity 1, Poisson arrivals at rate λ, exponential handle times
    of mean 1/μ = 100 s, no patience limit, no reservations, first reply at assignment, people
    as machines (no breaks, no after-chat work, no slow-down). Queueing theory gives

        P(W > 0)  = C(c, a)
        E[W]      = C(c, a) / (cμ − λ)
        P(W > t)  = C(c, a) · exp(−(cμ − λ) t)

    and the simulated waits agree within 5 % (ρ = 0.8: three independent 20-day runs, ≈ 415,000
    chats; one 20-day run's mean wait still varies by ±5 % with the seed). At ρ = 0.95 only
    P(W > 0) is checked: the mean wait's relaxation time there is so long that four 20-day runs
    gave 0.86–1.20 of E[W] (noise, not bias: their average is 1.04)."""
    import math

    c, mean = 10, 100.0
    lam = rho * c / mean
    waits = _mmc_waits(tmp_path, rho, hours, seeds)
    n = len(waits)
    assert n > 50_000
    pw = erlang_c(c, lam * mean)
    drain = c / mean - lam
    assert sum(w > 0 for w in waits) / n == pytest.approx(pw, rel=0.05)
    if rho > 0.9:
        return
    assert sum(waits) / n == pytest.approx(pw / drain, rel=0.05)
    t = 1 / drain
    assert sum(w > t for w in waits) / n == pytest.approx(pw * math.exp(-drain * t), rel=0.05)
