"""Reports of ``fenliu simulate``: a rich table on the terminal and one self-contained HTML file.

Both are drawn from the JSON figures alone (the document ``--json`` writes), so a report can be
rebuilt from saved figures. Every label, chart titles and legends too, comes from the catalogue
(router/core/i18n.py) in the current language. Charts are matplotlib SVGs inlined in the page with text
kept as SVG text (``svg.fonttype = none``): the reader's browser draws the Chinese with its own
fonts, and matplotlib measures it with an installed Noto CJK font when there is one (else the
layout is approximate, never boxes in the page).
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from router.core import i18n
from router.core.i18n import _, gettext, t

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
    # Labels are message ids (English), shown with t() in the current language (router/core/i18n.py).
    (i18n._("messages routed"), lambda p: _num(p["messages"])),
    (i18n._("conversations"), lambda p: _num(p["conversations"])),
    (i18n._("wait to 1st human reply p50 / p90 / p99 (s)"), _waits),
    (i18n._("… counting buyers who gave up, p50 / p90 / p99 (s)"), _waits_all),
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
    (i18n._("… within a shift (agents on the same hours)"), lambda p: _num(p["load_spread"].get("handled_gini_within_shift"), 3)),
    (i18n._("Gini of utilisation"), lambda p: _num(p["load_spread"]["utilisation_gini"], 3)),
]


def print_summary(doc: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    sc = doc["scenario"]
    table = Table(title=i18n.gettext("fenliu simulate · {source} · seed {seed}", source=source_label(sc["source"]), seed=sc["seed"]))
    table.add_column(i18n.gettext("figure"))
    for p in doc["policies"]:
        table.add_column(f"{policy_label(p['policy'])}\n({_strategies(p)})", justify="right")
    for label, get in ROWS:
        table.add_row(t(label), *(get(p) for p in doc["policies"]))
    console.print(table)


def _strategies(p: dict[str, Any]) -> str:
    return ", ".join(sorted(set(p["strategies"].values())))


#: The label ``--baseline`` gives its column (router/tools/simulate_cli.py); other labels are folder names.
BASELINE = _("plain round-robin")


def policy_label(label: str) -> str:
    return t(BASELINE) if label == BASELINE else label
_SCENARIO = "scenario "


def source_label(source: str) -> str:
    """Where the traffic came from, as the reader's language says it: ``scenario sale-day`` (the
    simulator's own words) becomes ``场景 sale-day``; a file name stays as it is."""
    if source.startswith(_SCENARIO):
        return gettext("scenario {name}", name=source.removeprefix(_SCENARIO))
    return source


#: The simulator's word for a reply window or a shift that never closes.
ALWAYS = _("always")


def window_label(window: str) -> str:
    return t(ALWAYS) if window == ALWAYS else window


#: The platforms' names (router/core/config.py ``Platform``) as readers know them.
PLATFORMS = {"pinduoduo": _("Pinduoduo"), "taobao": _("Taobao"), "tmall": _("Tmall"), "jd": _("JD"),
             "douyin": _("Douyin"), "other": _("other platform")}
_GROUPS = {"vip": _("VIP"), "others": _("others")}


def group_label(key: str) -> str:
    """A row of the per-platform / VIP table: ``platform:pinduoduo`` → ``平台 拼多多``."""
    kind, sep, name = key.partition(":")
    if sep and kind == "platform":
        return gettext("platform {name}", name=t(PLATFORMS.get(name, name)))
    return t(_GROUPS.get(key, key))


#: Installed fonts with Chinese glyphs, the first found used for charts (Debian: fonts-noto-cjk).
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
             "Droid Sans Fallback", "AR PL UMing CN")


def cjk_font() -> str | None:
    """The first of :data:`CJK_FONTS` matplotlib can find, or ``None``."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


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
        "font.sans-serif": _fonts(),
        "font.size": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
    })
    return plt


def _fonts() -> list[str]:
    """In Chinese a CJK font first (it has Latin letters too; matplotlib lays SVG text out with the
    first font only, so Chinese behind DejaVu would be measured as missing glyphs); else DejaVu."""
    latin = ["DejaVu Sans", "Arial", "Liberation Sans"]
    cjk = cjk_font()
    if cjk is None:
        return latin
    return [cjk, *latin] if i18n.current() != "en" else [*latin, cjk]


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
        ax.set_title(gettext("{policy} — waiting conversations", policy=policy_label(p["policy"])))
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(tz=tz, minticks=3, maxticks=6))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=tz))
        ax.set_xlabel(gettext("local time ({tz}), max per {bucket:.0f} s", tz=doc["scenario"]["timezone"], bucket=q["bucket_s"]))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(gettext("queue depth"))
    if skills:
        axes[0][-1].legend(title=gettext("skill"), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
        ax.set_title(gettext("{policy} — p50 {p50} s, p90 {p90} s", policy=policy_label(p["policy"]), p50=_num(w["p50"]), p90=_num(w["p90"])))
        ax.set_xlabel(gettext("wait to first human reply (s; last bar = {last} s or more)", last=h["edges"][-1]))
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel(gettext("% of conversations"))
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
            ax1.bar(xs, [p["agents"].get(a, {}).get("handled", 0) for a in agents], width, label=policy_label(p["policy"]))
            ax2.bar(xs, [100 * p["agents"].get(a, {}).get("utilisation", 0) for a in agents], width, label=policy_label(p["policy"]))
        ax2.set_xticks(range(len(agents)), agents, rotation=45 if len(agents) > 12 else 0, ha="right" if len(agents) > 12 else "center")
        ax2.set_xlabel(gettext("agent"))
    else:
        for p in pols:
            handled = sorted((v["handled"] for v in p["agents"].values()), reverse=True)
            util = sorted((100 * v["utilisation"] for v in p["agents"].values()), reverse=True)
            ax1.plot(range(len(handled)), handled, label=policy_label(p["policy"]))
            ax2.plot(range(len(util)), util, label=policy_label(p["policy"]))
        ax2.set_xlabel(gettext("agents, busiest first"))
    ax1.set_ylabel(gettext("conversations handled"))
    ax2.set_ylabel(gettext("utilisation %"))
    ax1.set_title(gettext("Load per agent (closed conversations) and utilisation (open conversations ÷ cap, on shift)"))
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
    names = [policy_label(p["policy"]) for p in pols]
    head = [gettext("figure")] + [f"{name} ({_strategies(p)})" for name, p in zip(names, pols)]
    summary = _table(head, [[t(label)] + [get(p) for p in pols] for label, get in ROWS])
    skills = sorted({k for p in pols for k in p["queue"]["max"]})
    queues = _table([gettext("max queue depth by skill")] + names,
                    [[s] + [_num(p["queue"]["max"].get(s, 0)) for p in pols] for s in skills])
    causes = sorted({c for p in pols for c in p["causes"]})
    cause_t = _table([gettext("decisions by cause")] + names,
                     [[c] + [_num(p["causes"].get(c, 0)) for p in pols] for c in causes])
    groups = sorted({g for p in pols for g in p.get("groups", {})})

    def _group(p: dict[str, Any], g: str) -> str:
        x = p.get("groups", {}).get(g)
        if x is None:
            return "–"
        return gettext("{rate} in 3 min · p90 {p90} s · {abandoned} gave up · {n} chats", rate=_pct(x["reply_rate"]),
                       p90=_num(x["wait_p90"]), abandoned=_pct(x["abandoned_share"]), n=_num(x["conversations"]))

    group_t = _table([gettext("by platform / VIP")] + names, [[group_label(g)] + [_group(p, g) for p in pols] for g in groups])
    shifts = sorted({s for p in pols for s in p["load_spread"].get("by_shift", {})})

    def _shift(p: dict[str, Any], s: str) -> str:
        x = p["load_spread"].get("by_shift", {}).get(s)
        return "–" if x is None else gettext("{gini} ({n} agents)", gini=_num(x["handled_gini"], 3), n=x["agents"])

    shift_t = _table([gettext("Gini of chats handled, per shift")] + names, [[window_label(s)] + [_shift(p, s) for p in pols] for s in shifts])
    agents = sorted({a for p in pols for a in p["agents"]})
    agent_rows = [[a] + [f"{p['agents'][a]['handled']} · {_pct(p['agents'][a]['utilisation'])}" if a in p["agents"] else "–"
                         for p in pols] for a in agents]
    agent_t = _table([gettext("agent: handled · utilisation")] + names, agent_rows)
    title = gettext("Fenliu policy simulation — {name}", name=sc["name"])
    meta = gettext("Traffic: {source} · {span} ({tz}) · seed {seed} · policies: {policies}", source=source_label(sc["source"]),
                   span=span, tz=sc["timezone"], seed=sc["seed"], policies=", ".join(names))
    note = gettext("Wait = from the buyer's first message to the first human reply (bot answers don't count). "
                   "The 3-minute reply rate counts conversations whose first message falls in the platform's window "
                   "({window}) and were answered by a human within {target:.0f} s. "
                   "Gini: 0 = perfectly even, 1 = one agent does everything.",
                   window=window_label(pols[0]["reply_rate"]["window"]), target=pols[0]["reply_rate"]["target_s"])
    h = html.escape
    # Headings translated here, not inside the f-string: Babel's extraction does not look into f-strings.
    heads = {k: h(gettext(v)) for k, v in (
        ("summary", _("Summary")), ("groups", _("By platform, VIP and others")), ("queue", _("Queue depth over time")),
        ("wait", _("Wait until the first human reply")), ("agents", _("Agents")), ("per_agent", _("per-agent figures")),
        ("causes", _("Expansions and re-routes")))}
    return f"""<!doctype html>
<html lang="{i18n.current().replace('_', '-')}"><head><meta charset="utf-8"><title>{h(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{h(title)}</h1>
<p class="meta">{h(meta)}</p>
<h2>{heads["summary"]}</h2>{summary}
<p class="note">{h(note)}</p>
<h2>{heads["groups"]}</h2>{group_t}
<h2>{heads["queue"]}</h2><div class="chart">{queue_chart(doc)}</div>{queues}
<h2>{heads["wait"]}</h2><div class="chart">{wait_chart(doc)}</div>
<h2>{heads["agents"]}</h2><div class="chart">{agents_chart(doc)}</div>
{shift_t}
<details{' open' if len(agents) <= 20 else ''}><summary>{heads["per_agent"]}</summary>{agent_t}</details>
<h2>{heads["causes"]}</h2>{cause_t}
</body></html>
"""


def write_html(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # var/report.html on a fresh clone
    path.write_text(render_html(doc), encoding="utf-8")


__all__ = ["ROWS", "agents_chart", "print_summary", "queue_chart", "render_html", "wait_chart", "write_html"]
