"""Reports of ``fenliu simulate``: a rich table on the terminal and one self-contained HTML file.

Both are drawn from the JSON figures alone (the document ``--json`` writes), so a report can be
rebuilt from saved figures. Charts are matplotlib SVGs inlined in the page, with text kept as
SVG text (``svg.fonttype = none``) and labelled in English so they read the same on machines
without CJK fonts.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from router import i18n
from router.i18n import t

Row = tuple[str, Callable[[dict[str, Any]], str]]


def _num(x: Any, digits: int = 0, suffix: str = "") -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}{suffix}"


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _waits(p: dict[str, Any]) -> str:
    w = p["wait_s"]
    return f"{_num(w['p50'])} / {_num(w['p90'])} / {_num(w['p99'])}"


def _reply(p: dict[str, Any]) -> str:
    r = p["reply_rate"]
    return f"{_pct(r['rate'])} ({r['replied_in_time']}/{r['eligible']})"


def _waits_all(p: dict[str, Any]) -> str:
    w = p.get("wait_all_s")
    return "–" if not w else f"{_num(w['p50'])} / {_num(w['p90'])} / {_num(w['p99'])}"


ROWS: list[Row] = [
    # Labels are message ids (English), shown with t() in the current language (router/i18n.py).
    (i18n._("messages routed"), lambda p: _num(p["messages"])),
    (i18n._("conversations"), lambda p: _num(p["conversations"])),
    (i18n._("wait to 1st human reply p50 / p90 / p99 (s)"), _waits),
    ("… counting buyers who gave up, p50 / p90 / p99 (s)", _waits_all),
    (i18n._("3-min human reply rate (in window)"), _reply),
    (i18n._("abandoned"), lambda p: f"{_num(p['abandoned'])} ({_pct(p['abandoned_share'])})"),
    (i18n._("settled by the bot"), lambda p: _num(p["outcomes"]["bot"])),
    (i18n._("expansions"), lambda p: _num(p["expansions"])),
    (i18n._("re-routes: offline / reservation timeout / transfer"),
     lambda p: " / ".join(_num(p["reroutes"][k]) for k in ("agent_offline", "reservation_timeout", "transfer"))),
    (i18n._("max queue depth (any skill)"), lambda p: _num(max(p["queue"]["max"].values(), default=0))),
    (i18n._("agent utilisation (mean)"), lambda p: _pct(p["load_spread"]["utilisation_mean"])),
    (i18n._("conversations handled max−min"), lambda p: _num(p["load_spread"]["handled_max_minus_min"])),
    (i18n._("Gini of conversations handled"), lambda p: _num(p["load_spread"]["handled_gini"], 3)),
    ("… within a shift (agents on the same hours)", lambda p: _num(p["load_spread"].get("handled_gini_within_shift"), 3)),
    (i18n._("Gini of utilisation"), lambda p: _num(p["load_spread"]["utilisation_gini"], 3)),
]


def print_summary(doc: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    sc = doc["scenario"]
    table = Table(title=i18n.gettext("fenliu simulate · {source} · seed {seed}", source=sc["source"], seed=sc["seed"]))
    table.add_column(i18n.gettext("figure"))
    for p in doc["policies"]:
        table.add_column(f"{p['policy']}\n({_strategies(p)})", justify="right")
    for label, get in ROWS:
        table.add_row(t(label), *(get(p) for p in doc["policies"]))
    console.print(table)


def _strategies(p: dict[str, Any]) -> str:
    return ", ".join(sorted(set(p["strategies"].values())))


# -- charts -----------------------------------------------------------------------------------------


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    start, end = text.find("<metadata>"), text.find("</metadata>")
    if start >= 0 and end > start:
        text = text[:start] + text[end + len("</metadata>"):]
    return text


def _setup() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "svg.fonttype": "none",
        "svg.hashsalt": "fenliu",
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans", "Arial", "Liberation Sans"],
        "font.size": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
    })
    return plt


def queue_chart(doc: dict[str, Any]) -> str:
    plt = _setup()
    import matplotlib.dates as mdates

    pols = doc["policies"]
    tz = ZoneInfo(doc["scenario"]["timezone"])
    fig, axes = plt.subplots(1, len(pols), figsize=(5.6 * len(pols), 3.2), sharey=True, squeeze=False)
    skills = sorted({k for p in pols for k in p["queue"]["series"]})
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(skills)}
    for ax, p in zip(axes[0], pols):
        q = p["queue"]
        for skill in skills:
            ys = q["series"].get(skill)
            if not ys:
                continue
            xs = [datetime.fromtimestamp(q["start"] + i * q["bucket_s"], tz) for i in range(len(ys))]
            ax.step(xs, ys, where="post", label=skill, color=colours[skill], linewidth=1.2)
        ax.set_title(f"{p['policy']} — waiting conversations")
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(tz=tz, minticks=3, maxticks=6))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=tz))
        ax.set_xlabel(f"local time ({doc['scenario']['timezone']}), max per {q['bucket_s']:.0f} s")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("queue depth")
    if skills:
        axes[0][-1].legend(title="skill", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _svg(fig)


def wait_chart(doc: dict[str, Any]) -> str:
    plt = _setup()
    pols = doc["policies"]
    fig, axes = plt.subplots(1, len(pols), figsize=(5.2 * len(pols), 3.0), sharey=True, squeeze=False)
    for ax, p in zip(axes[0], pols):
        h = p["wait_histogram"]
        total = max(sum(h["counts"]), 1)
        share = [100 * c / total for c in h["counts"]]
        ax.bar(h["edges"], share, width=h["bin_s"], align="edge", color="#4c72b0", edgecolor="white", linewidth=0.3)
        target = p["reply_rate"]["target_s"]
        ax.axvline(target, color="#c44e52", linestyle="--", linewidth=1)
        ax.text(target + 5, max(share, default=1) * 0.95, f"{target:.0f} s", color="#c44e52", fontsize=8)
        w = p["wait_s"]
        ax.set_title(f"{p['policy']} — p50 {_num(w['p50'])} s, p90 {_num(w['p90'])} s")
        ax.set_xlabel(f"wait to first human reply (s; last bar = {h['edges'][-1]} s or more)")
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("% of conversations")
    return _svg(fig)


def agents_chart(doc: dict[str, Any]) -> str:
    plt = _setup()
    pols = doc["policies"]
    agents = sorted({a for p in pols for a in p["agents"]})
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(7.0, 0.45 * len(agents) * len(pols) + 2), 5.6),
                                   sharex=len(agents) <= 40)
    if len(agents) <= 40:
        width = 0.8 / len(pols)
        for k, p in enumerate(pols):
            xs = [i + (k - (len(pols) - 1) / 2) * width for i in range(len(agents))]
            ax1.bar(xs, [p["agents"].get(a, {}).get("handled", 0) for a in agents], width, label=p["policy"])
            ax2.bar(xs, [100 * p["agents"].get(a, {}).get("utilisation", 0) for a in agents], width, label=p["policy"])
        ax2.set_xticks(range(len(agents)), agents, rotation=45 if len(agents) > 12 else 0, ha="right" if len(agents) > 12 else "center")
        ax2.set_xlabel("agent")
    else:
        for p in pols:
            handled = sorted((v["handled"] for v in p["agents"].values()), reverse=True)
            util = sorted((100 * v["utilisation"] for v in p["agents"].values()), reverse=True)
            ax1.plot(range(len(handled)), handled, label=p["policy"])
            ax2.plot(range(len(util)), util, label=p["policy"])
        ax2.set_xlabel("agents, busiest first")
    ax1.set_ylabel("conversations handled")
    ax2.set_ylabel("utilisation %")
    ax1.set_title("Load per agent (closed conversations) and utilisation (open conversations ÷ cap, on shift)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, axis="y")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return _svg(fig)


# -- HTML ---------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","PingFang SC",sans-serif;
margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:13px}table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 10px;text-align:right}th:first-child,td:first-child{text-align:left}
thead th{background:#f3f5f8}tbody tr:nth-child(even){background:#fafbfc}
.chart svg{max-width:100%;height:auto}.note{color:#555;font-size:13px;max-width:900px}
"""


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


def render_html(doc: dict[str, Any]) -> str:
    pols = doc["policies"]
    sc = doc["scenario"]
    tz = ZoneInfo(sc["timezone"])
    span = f"{datetime.fromtimestamp(sc['start'], tz):%Y-%m-%d %H:%M} → {datetime.fromtimestamp(sc['end'], tz):%Y-%m-%d %H:%M}"
    gettext = i18n.gettext
    head = [gettext("figure")] + [f"{p['policy']} ({_strategies(p)})" for p in pols]
    summary = _table(head, [[t(label)] + [get(p) for p in pols] for label, get in ROWS])
    skills = sorted({k for p in pols for k in p["queue"]["max"]})
    queues = _table([gettext("max queue depth by skill")] + [p["policy"] for p in pols],
                    [[s] + [_num(p["queue"]["max"].get(s, 0)) for p in pols] for s in skills])
    causes = sorted({c for p in pols for c in p["causes"]})
    cause_t = _table([gettext("decisions by cause")] + [p["policy"] for p in pols],
                     [[c] + [_num(p["causes"].get(c, 0)) for p in pols] for c in causes])
    groups = sorted({g for p in pols for g in p.get("groups", {})})

    def _group(p: dict[str, Any], g: str) -> str:
        x = p.get("groups", {}).get(g)
        if x is None:
            return "–"
        return (f"{_pct(x['reply_rate'])} in 3 min · p90 {_num(x['wait_p90'])} s · "
                f"{_pct(x['abandoned_share'])} gave up · {x['conversations']:,} chats")

    group_t = _table(["by platform / VIP"] + [p["policy"] for p in pols], [[g] + [_group(p, g) for p in pols] for g in groups])
    shifts = sorted({s for p in pols for s in p["load_spread"].get("by_shift", {})})
    shift_t = _table(["Gini of chats handled, per shift"] + [p["policy"] for p in pols],
                     [[s] + [f"{_num(p['load_spread']['by_shift'][s]['handled_gini'], 3)} ({p['load_spread']['by_shift'][s]['agents']} agents)"
                             if s in p["load_spread"].get("by_shift", {}) else "–" for p in pols] for s in shifts])
    agents = sorted({a for p in pols for a in p["agents"]})
    agent_rows = [[a] + [f"{p['agents'][a]['handled']} · {_pct(p['agents'][a]['utilisation'])}" if a in p["agents"] else "–"
                         for p in pols] for a in agents]
    agent_t = _table([gettext("agent: handled · utilisation")] + [p["policy"] for p in pols], agent_rows)
    title = gettext("Fenliu policy simulation — {name}", name=sc["name"])
    meta = gettext("Traffic: {source} · {span} ({tz}) · seed {seed} · policies: {policies}", source=sc["source"],
                   span=span, tz=sc["timezone"], seed=sc["seed"], policies=", ".join(p["policy"] for p in pols))
    note = gettext("Wait = from the buyer's first message to the first human reply (bot answers don't count). "
                   "The 3-minute reply rate counts conversations whose first message falls in the platform's window "
                   "({window}) and were answered by a human within {target:.0f} s. "
                   "Gini: 0 = perfectly even, 1 = one agent does everything.",
                   window=pols[0]["reply_rate"]["window"], target=pols[0]["reply_rate"]["target_s"])
    h = html.escape
    return f"""<!doctype html>
<html lang="{i18n.current().replace('_', '-')}"><head><meta charset="utf-8"><title>{h(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{h(title)}</h1>
<p class="meta">{h(meta)}</p>
<h2>{h(gettext("Summary"))}</h2>{summary}
<p class="note">{h(note)}</p>
<h2>By platform, VIP and others</h2>{group_t}
<h2>{h(gettext("Queue depth over time"))}</h2><div class="chart">{queue_chart(doc)}</div>{queues}
<h2>{h(gettext("Wait until the first human reply"))}</h2><div class="chart">{wait_chart(doc)}</div>
<h2>{h(gettext("Agents"))}</h2><div class="chart">{agents_chart(doc)}</div>
{shift_t}
<details{' open' if len(agents) <= 20 else ''}><summary>{h(gettext("per-agent figures"))}</summary>{agent_t}</details>
<h2>{h(gettext("Expansions and re-routes"))}</h2>{cause_t}
</body></html>
"""


def write_html(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # var/report.html on a fresh clone
    path.write_text(render_html(doc), encoding="utf-8")


__all__ = ["ROWS", "agents_chart", "print_summary", "queue_chart", "render_html", "wait_chart", "write_html"]
