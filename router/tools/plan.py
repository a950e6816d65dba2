"""``fenliu plan``: the fewest agents per hour and skill group that meet a service target.

Workforce planners are separate products in the contact-centre suites; here the router plans
with its own simulator, so the plan is checked against the same routing, bot and people model
as ``fenliu simulate``:

1. **Erlang C start.** Per local hour and skill group (the buyers' needs: presale, logistics,
   aftersale, vip), arrivals ``λ`` from the traffic and the mean work per chat ``AHT`` (handle
   plus after-chat work) from the scenario. An agent with ``cap`` chats open works at
   ``cap / (1 + handle_per_chat·(cap − 1))`` times the rate of one chat (the scenario's load
   model), so ``c`` agents are ``c·that`` servers. The service level of ``s`` servers at offered
   load ``a = λ·AHT`` is ``SL = 1 − C(s, a)·exp(−(s − a)·t / AHT)`` (Erlang C), with ``t`` the
   reply target less the median accept and first-reply delays; the start is the fewest agents
   with ``SL`` at the target rate.
2. **Confirmed by simulation.** The staffing becomes agents whose shifts are exactly their hours
   (an agent per hour and group), and the day is simulated. Every hour with first messages in the
   reply window must meet the target reply rate and the abandonment limit; an hour that does not
   gets one more agent in the group with the most misses, until all meet.
   An agent that does not reduce the hour's misses is taken back; an hour where two groups'
   extra agents did not help (buyers of a shop that is still closed, say) is not short of agents
   and is reported as not staffable. Hours when no shop is open get nobody.
3. **Tight at the peak.** In the hour with the most agents, agents are taken away one at a time
   while the day still meets the target: so one agent fewer in the peak hour does not.

The hourly table comes with the shifts (8 hours, 4 at the end of the day) that cover it,
started greedily at the first hour short of cover.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from router.core import i18n
from router.core.config import Agent, Config, ConfigErrors, load_config
from router.core.i18n import _, gettext
from router.tools.scenario import Scenario, load_scenario
from router.core.schedule import Window

#: The skills of a planned agent of each group: their own first, and presale, which every
#: chat the classifier is unsure of starts as (a single-skill plan strands those chats).
GROUPS: dict[str, tuple[str, ...]] = {
    "presale": ("presale", "logistics"),
    "logistics": ("logistics", "presale"),
    "aftersale": ("aftersale", "presale"),
    "vip": ("vip", "aftersale", "presale"),
}
SHIFT_H = 8


class Plan(msgspec.Struct):
    """Agents per local hour and group, and what the simulation of that staffing gave."""

    hours: list[int]
    table: dict[str, list[int]]
    erlang: dict[str, list[int]]
    reply_rate: float | None
    abandoned_share: float
    by_hour: list[dict[str, Any]]
    shifts: dict[str, list[tuple[int, int, int]]]
    simulations: int
    unstaffable: list[int]
    target_rate: float
    target_abandoned: float
    met: bool


def erlang_c(s: int, a: float) -> float:
    """Probability of waiting in M/M/s at offered load ``a`` (1 when ``s ≤ a``)."""
    if s <= a:
        return 1.0
    term = 1.0
    total = 1.0
    for k in range(1, s):
        term *= a / k
        total += term
    top = term * a / s / (1 - a / s)
    return top / (total + top)


def service_level(s: int, a: float, t: float, aht: float) -> float:
    if a <= 0:
        return 1.0
    if s <= a:
        return 0.0
    return 1.0 - erlang_c(s, a) * math.exp(-(s - a) * t / aht)


def _mean(dist: Any) -> float:
    return sum(dist.quantile((i + 0.5) / 400) for i in range(400)) / 400


def erlang_start(arrivals: dict[str, list[int]], scenario: Scenario, target_s: float, rate: float, cap: int) -> dict[str, list[int]]:
    a = scenario.agents
    per_agent = cap / (1 + a.load.handle_per_chat * (cap - 1))
    t = max(1.0, target_s - a.accept_s.quantile(0.5) - a.first_reply_s.quantile(0.5))
    out = {}
    for group, counts in arrivals.items():
        aht = _mean(scenario.handle_dist(group)) + _mean(a.after_chat_s)
        row = []
        for n in counts:
            load = n / 3600 * aht
            agents = 0
            while service_level(int(agents * per_agent), load, t, aht) < rate:
                agents += 1
            row.append(agents)
        out[group] = row
    return out


def _windows(hours: list[int]) -> tuple[Window, ...]:
    """Daily windows of the given local hours, contiguous runs merged."""
    runs: list[list[int]] = []
    for h in sorted(hours):
        if runs and runs[-1][1] == h:
            runs[-1][1] = h + 1
        else:
            runs.append([h, h + 1])
    return tuple(Window("mon-sun", f"{a:02d}:00", f"{b:02d}:00") for a, b in runs)


def staffing_config(config: Config, table: dict[str, list[int]], hours: list[int], cap: int) -> Config:
    """The configuration with the planned agents instead of its own: agent ``k`` of a group works
    every local hour that needs more than ``k`` agents of it."""
    agents: dict[str, Agent] = {}
    for group, row in table.items():
        for k in range(max(row, default=0)):
            worked = [hours[i] for i, n in enumerate(row) if n > k]
            aid = f"plan-{group}-{k + 1:02d}"
            agents[aid] = Agent(id=aid, skills=GROUPS[group], shops=("*",), max_concurrent=cap,
                                schedule=_windows(worked), timezone=config.main.defaults.timezone)
    return Config(config.dir, config.main, config.shops, agents, config.policies, config.plugins)


def cover_shifts(need: list[int], hours: list[int], length: int = SHIFT_H) -> list[tuple[int, int, int]]:
    """Shifts ``(start hour, end hour, agents)`` covering ``need``: at the first hour short of
    cover, start as many shifts as it lacks (shorter at the end of the day)."""
    n = len(need)
    cover = [0] * n
    out: list[tuple[int, int, int]] = []
    for i in range(n):
        short = need[i] - cover[i]
        if short > 0:
            end = min(n, i + length)
            for j in range(i, end):
                cover[j] += short
            out.append((hours[i], hours[end - 1] + 1, short))
    return out


async def make_plan(config: Config, scenario: Scenario, traffic: Any, seed: int, rate: float, abandoned: float,
                    cap: int, max_runs: int = 60) -> Plan:
    tz = scenario.tz
    n_hours = max(1, math.ceil((traffic.end - traffic.start) / 3600))
    hours = [datetime.fromtimestamp(traffic.start + 3600 * i, tz).hour for i in range(n_hours)]
    arrivals = {g: [0] * n_hours for g in GROUPS}
    for c in traffic.conversations:
        i = min(int((c.times[0] - traffic.start) // 3600), n_hours - 1)
        arrivals[c.category if c.category in GROUPS else "presale"][i] += 1
    defaults = config.main.defaults
    target_s = scenario.metrics.reply_target_s or defaults.reply_within_s
    start = erlang_start(arrivals, scenario, target_s, rate, cap)
    for i in range(n_hours):  # no shop open all hour long: nobody to plan (buyers wait for the morning)
        t = traffic.start + 3600 * i
        if not any(shop.is_open(t + m * 60) for shop in config.shops.values() for m in (0, 30, 59)):
            for g in start:
                start[g][i] = 0
    table = {g: list(v) for g, v in start.items()}
    runs = 0

    frozen: set[int] = set()  # hours more agents do not help (a shop still closed, say)
    missed: dict[int, int] = {}
    tried: dict[int, set[str]] = {}  # groups whose extra agent did not help, per hour

    async def judge(tab: dict[str, list[int]]) -> tuple[bool, dict[str, Any], list[int], dict[int, str]]:
        nonlocal runs
        runs += 1
        ok, fig, failing, worst, miss = await judge_table(config, scenario, traffic, seed, tab, hours, cap, rate,
                                                          abandoned, frozen)
        missed.update(miss)
        return ok, fig, failing, worst

    ok, fig, failing, worst = await judge(table)
    while not ok and runs < max_runs:
        before = dict(missed)
        added = {}
        for i in failing:
            order = sorted(GROUPS, key=lambda g: (g != worst[i], g))
            g = next((g for g in order if g not in tried.get(i, set())), worst[i])
            added[i] = g
            table[g][i] += 1
        ok, fig, failing, worst = await judge(table)
        undone = False
        for i, g in added.items():
            if missed.get(i, 0) >= before.get(i, 0):  # no better: take it back, try another group
                table[g][i] -= 1
                undone = True
                tried.setdefault(i, set()).add(g)
                if len(tried[i]) >= 2:  # two groups did not help: the hour is not short of agents
                    frozen.add(i)
        if undone:
            ok, fig, failing, worst = await judge(table)
    tight: set[int] = set()
    while ok and runs < max_runs:
        # the peak hour: one agent fewer there must fail (prune it; a pruned hour may stop being
        # the peak, then the new peak is pruned in turn)
        peak = max(range(n_hours), key=lambda i: (sum(table[g][i] for g in GROUPS), -i))
        if peak in tight:
            break
        tight.add(peak)
        for g in sorted(GROUPS, key=lambda g: -table[g][peak]):
            while table[g][peak] > 0 and runs < max_runs:
                table[g][peak] -= 1
                ok2, fig2, _, _ = await judge(table)
                if not ok2:
                    table[g][peak] += 1
                    break
                fig = fig2
    by_hour = []
    per = {i: [0, 0, 0, 0] for i in range(n_hours)}
    for key, v in fig["by_hour"].items():
        i = int(key.split(":")[0])
        if i in per:
            for k in range(4):
                per[i][k] += v[k]
    for i in range(n_hours):
        convs, elig, in_time, aband = per[i]
        by_hour.append({"hour": hours[i], "agents": sum(table[g][i] for g in GROUPS), "conversations": convs,
                        "reply_rate": round(in_time / elig, 4) if elig else None,
                        "abandoned_share": round(aband / convs, 4) if convs else 0.0})
    total = [sum(table[g][i] for g in GROUPS) for i in range(n_hours)]
    shifts = {g: cover_shifts(table[g], hours) for g in GROUPS}
    shifts["all"] = cover_shifts(total, hours)
    return Plan(hours, table, start, fig["reply_rate"]["rate"], fig["abandoned_share"], by_hour, shifts, runs,
                sorted(hours[i] for i in frozen), rate, abandoned, ok)


async def judge_table(config: Config, scenario: Scenario, traffic: Any, seed: int, table: dict[str, list[int]],
                      hours: list[int], cap: int, rate: float, abandoned: float, frozen: set[int] = frozenset()  # type: ignore[assignment]
                      ) -> tuple[bool, dict[str, Any], list[int], dict[int, str], dict[int, int]]:
    """Simulate a staffing table: whether every hour with first messages in the window (but the
    ``frozen`` ones) meets the target; the figures, the failing hours (indices), the group with
    most misses in each, and the misses per hour."""
    from router.tools.simulate import simulate

    n_hours = len(hours)
    fig = await simulate(staffing_config(config, table, hours, cap), scenario, traffic, seed, "plan")
    per = [[0, 0, 0, 0] for _ in range(n_hours)]
    misses: dict[int, dict[str, int]] = {}
    for key, (convs, elig, in_time, aband) in fig["by_hour"].items():
        h, need = key.split(":")
        i = int(h)
        if not 0 <= i < n_hours:
            continue
        for k, v in enumerate((convs, elig, in_time, aband)):
            per[i][k] += v
        g = need if need in GROUPS else "presale"
        misses.setdefault(i, {}).setdefault(g, 0)
        misses[i][g] += (elig - in_time) + aband
    failing = [i for i, (convs, elig, in_time, aband) in enumerate(per)
               if elig and (in_time / elig < rate or aband / convs > abandoned) and i not in frozen]
    worst = {i: max(misses[i], key=lambda g: misses[i][g]) for i in failing}
    return not failing, fig, failing, worst, {i: sum(misses.get(i, {}).values()) for i in range(n_hours)}


# -- reports ---------------------------------------------------------------------------------------


def plan_chart(plan: Plan) -> str:
    from router.tools.report import _setup, _svg

    plt = _setup()
    fig, ax = plt.subplots(figsize=(9, 3.4))
    xs = list(range(len(plan.hours)))
    bottom = [0] * len(xs)
    for g, row in plan.table.items():
        ax.bar(xs, row, bottom=bottom, label=g, width=0.8)
        bottom = [b + r for b, r in zip(bottom, row)]
    ax2 = ax.twinx()
    rates = [100 * h["reply_rate"] if h["reply_rate"] is not None else float("nan") for h in plan.by_hour]
    ax2.plot(xs, rates, color="#c44e52", marker="o", markersize=3, linewidth=1.2, label=gettext("3-min rate (sim)"))
    ax2.axhline(100 * plan.target_rate, color="#c44e52", linestyle="--", linewidth=0.8)
    ax2.set_ylim(0, 105)
    ax2.set_ylabel(gettext("3-min human reply rate %"))
    ax.set_xticks(xs, [f"{h:02d}" for h in plan.hours])
    ax.set_xlabel(gettext("local hour"))
    ax.set_ylabel(gettext("agents"))
    ax.set_title(gettext("Planned agents per hour and group, and the simulated reply rate"))
    ax.legend(fontsize=8, loc="upper left")
    return _svg(fig)


def render_html(plan: Plan, title: str) -> str:
    import html

    from router.tools.report import _CSS, _table

    head = [gettext("hour"), *plan.table, gettext("total"), "Erlang C", gettext("3-min rate (sim)"), gettext("abandoned (sim)")]
    rows = []
    for i, h in enumerate(plan.hours):
        b = plan.by_hour[i]
        rows.append([f"{h:02d}:00", *(str(plan.table[g][i]) for g in plan.table), str(b["agents"]),
                     str(sum(plan.erlang[g][i] for g in plan.erlang)),
                     "–" if b["reply_rate"] is None else f"{100 * b['reply_rate']:.1f} %",
                     f"{100 * b['abandoned_share']:.1f} %"])
    shifts = _table([gettext("group"), gettext("shifts (start–end × agents)")],
                    [[gettext("all") if g == "all" else g, ", ".join(f"{a:02d}–{b:02d} × {n}" for a, b, n in s)]
                     for g, s in plan.shifts.items()])
    meta = gettext("Target: 3-minute human reply rate ≥ {rate:.0f} % in every hour of the window, abandonment ≤ "
                   "{abandoned:.0f} %.", rate=100 * plan.target_rate, abandoned=100 * plan.target_abandoned) + " " + _verdict(plan)
    per_hour, cover = gettext("Agents per hour"), gettext("Shifts that cover it")  # not in the f-string: Babel skips those
    return f"""<!doctype html>
<html lang="{i18n.current().replace('_', '-')}"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="meta">{html.escape(meta)}</p>
<h2>{html.escape(per_hour)}</h2><div class="chart">{plan_chart(plan)}</div>{_table(head, rows)}
<h2>{html.escape(cover)}</h2>{shifts}
</body></html>
"""


def _verdict(plan: Plan) -> str:
    what = (_("met in simulation: day {rate:.1f} %, abandoned {abandoned:.1f} % ({n} simulations)") if plan.met
            else _("NOT met in simulation: day {rate:.1f} %, abandoned {abandoned:.1f} % ({n} simulations)"))
    return gettext(what, rate=100 * (plan.reply_rate or 0), abandoned=100 * plan.abandoned_share, n=plan.simulations)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", type=Path, help=i18n.gettext("scenario TOML (default: built-in defaults)"))
    p.add_argument("--traffic", type=Path, help=i18n.gettext("recorded JSONL instead of the scenario's synthetic buyers"))
    p.add_argument("--reply-rate", type=float, default=0.95, help=i18n.gettext("target 3-minute human reply rate in every hour (0.95)"))
    p.add_argument("--abandoned", type=float, default=0.03, help=i18n.gettext("largest share of buyers who give up, per hour (0.03)"))
    p.add_argument("--cap", type=int, default=5, help=i18n.gettext("max_concurrent of the planned agents (5)"))
    p.add_argument("--seed", type=int, help=i18n.gettext("random seed (default: the scenario's seed)"))
    p.add_argument("--report", type=Path, metavar="FILE.html", help=i18n.gettext("write the plan with its chart as HTML"))
    p.add_argument("--json", type=Path, metavar="FILE", help=i18n.gettext("write the plan as JSON ('-' for stdout)"))


def run_command(args: argparse.Namespace) -> int:
    """The ``plan`` command: exit 0 when the plan meets the target in simulation, 2 when it could
    not be met, 1 with ``file: key.path: reason`` lines for bad input."""
    import anyio
    from rich.console import Console
    from rich.table import Table

    from router.tools.report import source_label
    from router.tools.simulate_traffic import build_traffic

    try:
        config = load_config(args.config)
        scenario = load_scenario(args.scenario, config)
    except ConfigErrors as exc:
        for e in exc.errors:
            print(i18n.t(e), file=sys.stderr)
        return 1
    seed = scenario.seed if args.seed is None else args.seed
    traffic, bad = build_traffic(scenario, config, seed, args.traffic)
    if bad:
        for line in bad:
            print(i18n.t(line), file=sys.stderr)
        return 1
    plan = anyio.run(make_plan, config, scenario, traffic, seed, args.reply_rate, args.abandoned, args.cap)
    to_stdout = args.json is not None and str(args.json) == "-"
    console = Console(stderr=True) if to_stdout else Console()
    table = Table(title=gettext("fenliu plan · {source} · target {rate:.0f} % in 3 min, ≤ {abandoned:.0f} % abandoned",
                            source=source_label(traffic.source), rate=100 * args.reply_rate, abandoned=100 * args.abandoned))
    for col in (gettext("hour"), *plan.table, gettext("total"), "Erlang C", gettext("3-min rate"), gettext("abandoned")):
        table.add_column(col, justify="right")
    for i, h in enumerate(plan.hours):
        b = plan.by_hour[i]
        table.add_row(f"{h:02d}:00", *(str(plan.table[g][i]) for g in plan.table), str(b["agents"]),
                  str(sum(plan.erlang[g][i] for g in plan.erlang)),
                  "–" if b["reply_rate"] is None else f"{100 * b['reply_rate']:.1f} %", f"{100 * b['abandoned_share']:.1f} %")
    console.print(table)
    console.print(gettext("shifts: {shifts}", shifts="; ".join(f"{a:02d}–{b:02d} × {n}" for a, b, n in plan.shifts["all"])))
    if plan.unstaffable:
        console.print(gettext("hours more agents do not help (shops closed, …): {hours}",
                              hours=", ".join(f"{h:02d}:00" for h in plan.unstaffable)))
    console.print(_verdict(plan))
    if args.json is not None:
        data = msgspec.json.format(msgspec.json.encode(plan, order="sorted"), indent=2) + b"\n"
        if to_stdout:
            sys.stdout.buffer.write(data)
        else:
            args.json.write_bytes(data)
    if args.report is not None:
        args.report.write_text(render_html(plan, gettext("Fenliu staffing plan — {name}", name=scenario.name)), encoding="utf-8")
    return 0 if plan.met else 2
