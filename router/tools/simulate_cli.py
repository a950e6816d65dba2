"""The ``simulate`` command: its arguments, the policies it compares (and the plain round-robin
baseline), runs over one seed or several, and what it prints and writes."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from router.core import i18n
from router.core.config import Config, ConfigError, ConfigErrors, load_config
from router.tools.scenario import Scenario, generate, load_scenario
from router.tools.simulate import simulate
from router.tools.simulate_measures import encode_results
from router.tools.simulate_traffic import Traffic, build_traffic


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", type=Path, help=i18n.gettext("scenario TOML (default: built-in defaults)"))
    p.add_argument("--traffic", type=Path, help=i18n.gettext("recorded JSONL to replay instead of synthetic arrivals"))
    p.add_argument("--compare", type=Path, nargs="+", action="extend", default=[], metavar="DIR",
                   help=i18n.gettext("further config folders (policies) to run on the same traffic"))
    p.add_argument("--report", type=Path, metavar="FILE.html", help=i18n.gettext("write a self-contained HTML report"))
    p.add_argument("--json", type=Path, metavar="FILE", help=i18n.gettext("write the figures as JSON ('-' for stdout)"))
    p.add_argument("--seed", type=int, help=i18n.gettext("random seed (default: the scenario's seed)"))
    p.add_argument("--baseline", action="store_true",
                   help=i18n.gettext("add a first column: the first config as plain round-robin (no sticky, aging, expansion; bot settles)"))
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help=i18n.gettext("run seeds seed … seed+N−1 and report means ± standard errors (3-minute rate, p90 wait, abandonment)"))
    p.add_argument("--write-traffic", type=Path, metavar="FILE.jsonl",
                   help=i18n.gettext("write the scenario's buyers as recorded JSONL (messages and a close line per conversation) and exit"))


def baseline_config(config: Config) -> Config:
    """Plain round-robin on the same shops, agents and plugins: no sticky agent, no aging, no
    skill expansion (a chat waits for its own skill), no dedicated agents, the priority queue,
    and the bot settling what it answers. The yardstick the recommended configuration is
    measured against (docs/simulate.md)."""
    from msgspec.structs import replace

    from policies.deadline import QueueSection
    from router.core.config import Target

    policies = {}
    for name, pol in config.policies.items():
        d = pol.dispatch
        changes: dict[str, Any] = {"dispatch": replace(
            d, strategy="round_robin", sticky_hours=0.0, aging_per_minute=0.0, targets=(Target(),),
            skill_targets={}, dedicated=())}
        if hasattr(pol, "queue"):
            changes["queue"] = QueueSection()
        if hasattr(pol, "bot") and hasattr(pol.bot, "platform_modes"):
            changes["bot"] = replace(pol.bot, mode="settle", platform_modes={})
        policies[name] = replace(pol, **changes)
    out = Config(config.dir, config.main, config.shops, config.agents, policies, config.plugins)
    out.label = "plain round-robin"  # type: ignore[attr-defined]
    return out


def seed_table(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Mean and standard error over seeds of the figures a comparison is judged by."""
    def stats(xs: list[float]) -> dict[str, float]:
        n = len(xs)
        mean = sum(xs) / n
        se = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1) / n) if n > 1 else 0.0
        return {"mean": round(mean, 4), "se": round(se, 4)}

    out = {}
    for label, figs in runs.items():
        out[label] = {
            "seeds": len(figs),
            "reply_rate": stats([f["reply_rate"]["rate"] or 0.0 for f in figs]),
            "wait_p90": stats([f["wait_s"]["p90"] or 0.0 for f in figs]),
            "wait_all_p90": stats([f["wait_all_s"]["p90"] or 0.0 for f in figs]),
            "wait_window_p90": stats([f["wait_window_s"]["p90"] or 0.0 for f in figs]),
            "abandoned_share": stats([f["abandoned_share"] for f in figs]),
            "bot_only": stats([f["outcomes"]["bot"] for f in figs]),
        }
    return out


def _labels(dirs: list[Path]) -> list[str]:
    names = [d.resolve().name or str(d) for d in dirs]
    return [str(d) if names.count(n) > 1 else n for d, n in zip(dirs, names)]


def run_command(args: argparse.Namespace) -> int:
    """The ``simulate`` command: exit 0, or 1 with ``file: key.path: reason`` lines."""
    import anyio
    from rich.console import Console

    err = Console(stderr=True)
    dirs = [args.config, *args.compare]
    configs: list[Config] = []
    problems: list[Any] = []
    for d in dirs:
        try:
            configs.append(load_config(d))
        except ConfigErrors as exc:
            problems.extend(exc.errors)
    scenario = None
    if not problems:
        try:
            scenario = load_scenario(args.scenario, configs[0])
            for c in configs[1:]:
                extra = _check_other(args.scenario, scenario, c)
                problems.extend(extra)
        except ConfigErrors as exc:
            problems.extend(exc.errors)
    if problems or scenario is None:
        for line in problems:
            print(i18n.t(line), file=sys.stderr)
        return 1
    seed = scenario.seed if args.seed is None else args.seed
    if args.write_traffic is not None:
        from router.tools.scenario import write_jsonl

        n = write_jsonl(generate(scenario, configs[0], seed), args.write_traffic)
        err.print(i18n.gettext("{n} conversations written to {path}", n=n, path=args.write_traffic))
        return 0
    labels = _labels(dirs)
    if args.baseline:
        configs.insert(0, baseline_config(configs[0]))
        labels.insert(0, "plain round-robin")
    if args.seeds > 1:
        return _run_seeds(args, configs, labels, scenario, seed, err)
    traffic, bad = build_traffic(scenario, configs[0], seed, args.traffic)
    if bad:
        for line in bad:
            print(i18n.t(line), file=sys.stderr)
        return 1
    results = anyio.run(_run_all, configs, scenario, traffic, seed, labels, err)
    doc = {
        "scenario": {"name": scenario.name, "source": traffic.source, "seed": seed,
                     "start": traffic.start, "end": traffic.end, "timezone": scenario.timezone},
        "policies": results,
    }
    from router.tools.report import print_summary, write_html

    to_stdout = args.json is not None and str(args.json) == "-"
    print_summary(doc, err if to_stdout else Console())
    if args.json is not None:
        data = encode_results(doc)
        if to_stdout:
            sys.stdout.buffer.write(data)
        else:
            args.json.write_bytes(data)
    if args.report is not None:
        write_html(doc, args.report)
        err.print(i18n.gettext("report written to {path}", path=args.report))
    return 0


def _run_seeds(args: argparse.Namespace, configs: list[Config], labels: list[str], scenario: Scenario,
               seed: int, err: Any) -> int:
    import anyio
    from rich.console import Console
    from rich.table import Table

    from router.tools.report import policy_label

    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for k in range(args.seeds):
        traffic, bad = build_traffic(scenario, configs[0], seed + k, args.traffic)
        if bad:
            for line in bad:
                print(i18n.t(line), file=sys.stderr)
            return 1
        for config, label in zip(configs, labels):
            err.print(i18n.gettext("seed {seed}: simulating {label}", seed=seed + k, label=policy_label(label)))
            runs[label].append(anyio.run(simulate, config, scenario, traffic, seed + k, label))
    table = seed_table(runs)
    from router.core.i18n import gettext

    out = Table(title=gettext("fenliu simulate · {source} · seeds {first}–{last} (mean ± s.e.)",
                              source=args.traffic or scenario.name, first=seed, last=seed + args.seeds - 1))
    for i, col in enumerate((gettext("policy"), gettext("3-min human reply rate"), gettext("p90 wait to 1st human reply (s)"),
                             gettext("p90 in the window (s)"), gettext("p90 incl. abandoned (s)"), gettext("abandoned"),
                             gettext("bot-only"))):
        out.add_column(col, justify="left" if i == 0 else "right")
    for label, row in table.items():
        def pm(key: str, pct: bool = False, row: dict[str, Any] = row) -> str:
            m, e = row[key]["mean"], row[key]["se"]
            return f"{100 * m:.1f} ± {100 * e:.1f} %" if pct else f"{m:.0f} ± {e:.0f}"
        out.add_row(policy_label(label), pm("reply_rate", True), pm("wait_p90"), pm("wait_window_p90"), pm("wait_all_p90"),
                    pm("abandoned_share", True),
                    pm("bot_only"))
    to_stdout = args.json is not None and str(args.json) == "-"
    (err if to_stdout else Console()).print(out)
    if args.json is not None:
        data = encode_results({"seeds": list(range(seed, seed + args.seeds)), "table": table, "runs": runs})
        if to_stdout:
            sys.stdout.buffer.write(data)
        else:
            args.json.write_bytes(data)
    return 0


def _check_other(file: Path | None, scenario: Scenario, config: Config) -> list[ConfigError]:
    from router.tools.scenario import check_scenario

    return check_scenario(Path(file or "<defaults>"), scenario, config)


async def _run_all(configs: list[Config], scenario: Scenario, traffic: Traffic, seed: int,
                   labels: list[str], err: Any) -> list[dict[str, Any]]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from router.tools.report import policy_label

    span = max(traffic.end - traffic.start, 1.0)
    out = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=err, disable=not err.is_terminal, transient=False) as bar:
        for config, label in zip(configs, labels):
            task = bar.add_task(i18n.gettext("simulating {label}", label=policy_label(label)), total=span)

            def tick(t: float, task: Any = task) -> None:
                bar.update(task, completed=min(t - traffic.start, span))

            out.append(await simulate(config, scenario, traffic, seed, label, tick))
            bar.update(task, completed=span)
    return out
