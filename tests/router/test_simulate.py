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

from router.simulate import gini, percentile

DATA = Path(__file__).resolve().parent.parent / "data"
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
