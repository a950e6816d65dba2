"""What a simulation measures, and the figures it reports: waits, reply rates, outcomes, queue
depth over time and each agent's busy time, counted as the run goes and summed up at its end."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import msgspec

from router.tools.scenario import daily_windows, in_windows

if TYPE_CHECKING:
    from router.core.config import Config
    from router.tools.scenario import Scenario
    from router.tools.simulate_people import Conv
    from router.tools.simulate_traffic import Traffic

REROUTE_CAUSES = ("agent_offline", "reservation_timeout", "transfer")
WAIT_EDGES = tuple(range(0, 615, 15))


class Measures:
    """The run's counters. ``tally`` holds per agent ``[open chats, since, busy area,
    assignments, handled]``; ``hours`` per (hour from start, need) and ``groups`` per (platform,
    VIP) count conversations, eligible ones, ones replied to in time and abandoned ones."""

    def __init__(self, config: Config, scenario: Scenario, traffic: Traffic) -> None:
        self.config = config
        self.traffic = traffic
        self.tally: dict[str, list[float]] = {aid: [0, traffic.start, 0.0, 0, 0] for aid in sorted(config.agents)}
        self.messages = 0
        self.bad_inputs = 0
        self.dropped_messages = 0
        self.handoffs = {"suggest": 0, "answer_and_handoff": 0}
        self.need_transfers = 0
        self.breaks = 0
        self.actions: dict[str, int] = {}
        self.causes: dict[str, int] = {}
        self.outcomes = {"human": 0, "abandoned": 0, "bot": 0, "blocked": 0, "unfinished": 0}
        self.waits: list[float] = []
        self.waits_all: list[float] = []
        self.waits_window: list[float] = []
        self.hours: dict[tuple[int, str], list[int]] = {}  # (hour from start, need) → counts
        self.groups: dict[tuple[str, bool], list[Any]] = {}
        self.eligible = 0
        self.in_time = 0
        self.depth: dict[str, int] = {}
        self.series: dict[str, list[int]] = {}
        self.bucket = scenario.metrics.bucket_s
        m = scenario.metrics
        defaults = config.main.defaults
        self.target = m.reply_target_s or defaults.reply_within_s
        self.window = (m.window_start or defaults.reply_window[0], m.window_end or defaults.reply_window[1])
        self.windows = daily_windows(scenario, *self.window, traffic.start, traffic.end)
        self.window_starts = [w[0] for w in self.windows]

    def set_depth(self, skill: str, delta: int, now: float) -> None:
        """A skill's queue grew or shrank: its series keeps each bucket's highest depth."""
        b = int((now - self.traffic.start) // self.bucket)
        cur = self.depth.get(skill, 0)
        ser = self.series.get(skill)
        if ser is None:
            ser = self.series[skill] = []
        while len(ser) <= b:
            ser.append(cur)
        new = cur + delta
        self.depth[skill] = new
        if new > ser[b]:
            ser[b] = new

    def agent(self, aid: str, delta: int, now: float) -> list[float] | None:
        """The agent's open chats change by ``delta``: their busy area grows by what was open."""
        t = self.tally.get(aid)
        if t is not None:
            t[2] += t[0] * (now - t[1])
            t[1] = now
            t[0] += delta
        return t

    def record(self, conv: Conv, outcome: str) -> None:
        self.outcomes[outcome] += 1
        hk = (int((conv.t0 - self.traffic.start) // 3600), conv.need)
        h = self.hours.get(hk)
        if h is None:
            h = self.hours[hk] = [0, 0, 0, 0]  # conversations, eligible, in time, abandoned
        h[0] += 1
        if outcome == "abandoned":
            h[3] += 1
        g = self.groups.get(conv.group)
        if g is None:
            # conversations, eligible, in time, abandoned, waits
            g = self.groups[conv.group] = [0, 0, 0, 0, []]
        g[0] += 1
        if outcome == "blocked":
            return
        if outcome == "abandoned":
            g[3] += 1
        if conv.replied is not None:
            w = conv.replied - conv.t0
            self.waits.append(w)
            self.waits_all.append(w)
            g[4].append(w)
        elif conv.left is not None:
            self.waits_all.append(conv.left - conv.t0)
        if in_windows(self.windows, self.window_starts, conv.t0):
            self.eligible += 1
            g[1] += 1
            if conv.replied is not None:
                self.waits_window.append(conv.replied - conv.t0)
            h[1] += 1
            if conv.replied is not None and conv.replied - conv.t0 <= self.target:
                self.in_time += 1
                g[2] += 1
                h[2] += 1

    def figures(self, label: str, now: float) -> dict[str, Any]:
        """The run's figures under ``label``, the series and busy times closed at ``now``."""
        end = max(now, self.traffic.end)
        nb = max(1, math.ceil((end - self.traffic.start) / self.bucket))
        for skill in self.series:
            self.set_depth(skill, 0, self.traffic.start + (nb - 1) * self.bucket)
        for aid in self.tally:
            self.agent(aid, 0, end)
        agents = {}
        for aid, (_, _, area, assignments, handled) in self.tally.items():
            acfg = self.config.agents[aid]
            on = shift_seconds(acfg.shift, self.traffic.start, end)
            util = area / (acfg.max_concurrent * on) if on > 0 else 0.0
            agents[aid] = {"assignments": int(assignments), "handled": int(handled),
                           "shift_h": _r(on / 3600), "utilisation": _r(util)}
        active = [a for a, v in agents.items() if v["shift_h"] > 0]
        handled = [agents[a]["handled"] for a in active]
        utils = [agents[a]["utilisation"] for a in active]
        # agents on different shifts handle different numbers of chats by design: the fairness
        # of a policy shows among agents who worked the same hours
        shifts: dict[str, list[str]] = {}
        for a in active:
            shifts.setdefault(shift_label(self.config.agents[a].schedule), []).append(a)
        by_shift = {
            label: {"agents": len(ids), "handled_gini": _r(gini([agents[a]["handled"] for a in ids])),
                    "utilisation_gini": _r(gini([agents[a]["utilisation"] for a in ids]))}
            for label, ids in sorted(shifts.items())
        }
        weight = sum(v["agents"] for v in by_shift.values()) or 1
        waits = sorted(self.waits)
        total = sum(self.outcomes.values())
        hist = [0] * len(WAIT_EDGES)
        for w in waits:
            hist[min(int(w // 15), len(WAIT_EDGES) - 1)] += 1
        reroutes = {c: self.causes.get(c, 0) for c in REROUTE_CAUSES}
        return {
            "policy": label,
            "config": str(self.config.dir),
            "strategies": {name: p.dispatch.strategy for name, p in sorted(self.config.policies.items())},
            "messages": self.messages,
            "bad_inputs": self.bad_inputs,
            "conversations": total,
            "actions": dict(sorted(self.actions.items())),
            "outcomes": self.outcomes,
            "abandoned": self.outcomes["abandoned"],
            "abandoned_share": _r(self.outcomes["abandoned"] / total if total else 0.0),
            "wait_s": {
                "count": len(waits),
                "mean": _r(sum(waits) / len(waits)) if waits else None,
                "p50": _r(percentile(waits, 50)),
                "p90": _r(percentile(waits, 90)),
                "p99": _r(percentile(waits, 99)),
                "max": _r(waits[-1]) if waits else None,
            },
            "wait_all_s": wait_summary(self.waits_all),
            "wait_window_s": wait_summary(self.waits_window),
            "wait_histogram": {"bin_s": 15, "edges": list(WAIT_EDGES), "counts": hist},
            "groups": self._group_figures(),
            "by_hour": {f"{hr}:{need}": v for (hr, need), v in sorted(self.hours.items())},
            "bot_handoffs": dict(self.handoffs),
            "need_transfers": self.need_transfers,
            "breaks": self.breaks,
            "dropped_messages": self.dropped_messages,
            "reply_rate": {
                "target_s": self.target,
                "window": "-".join(self.window),
                "eligible": self.eligible,
                "replied_in_time": self.in_time,
                "rate": _r(self.in_time / self.eligible) if self.eligible else None,
            },
            "causes": dict(sorted(self.causes.items())),
            "expansions": self.causes.get("expansion", 0),
            "reroutes": reroutes,
            "queue": {
                "bucket_s": self.bucket,
                "start": self.traffic.start,
                "max": {k: max(v) for k, v in sorted(self.series.items())},
                "series": {k: v[:nb] for k, v in sorted(self.series.items())},
            },
            "agents": agents,
            "load_spread": {
                "handled_max_minus_min": (max(handled) - min(handled)) if handled else 0,
                "handled_gini": _r(gini(handled)),
                "utilisation_mean": _r(sum(utils) / len(utils)) if utils else 0.0,
                "utilisation_max_minus_min": _r(max(utils) - min(utils)) if utils else 0.0,
                "utilisation_gini": _r(gini(utils)),
                "handled_gini_within_shift": _r(sum(v["agents"] * v["handled_gini"] for v in by_shift.values()) / weight),
                "by_shift": by_shift,
            },
        }

    def _group_figures(self) -> dict[str, Any]:
        """Per platform and VIP vs others: conversations, reply rate, abandoned share, waits."""
        out: dict[str, Any] = {}
        merged: dict[str, list[Any]] = {}
        for (plat, vip), g in self.groups.items():
            for key in (f"platform:{plat}", "vip" if vip else "others"):
                m = merged.setdefault(key, [0, 0, 0, 0, []])
                for k in range(4):
                    m[k] += g[k]
                m[4].extend(g[4])
        for key, (convs, eligible, in_time, abandoned, waits) in sorted(merged.items()):
            ws = sorted(waits)
            out[key] = {"conversations": convs, "eligible": eligible, "replied_in_time": in_time,
                        "reply_rate": _r(in_time / eligible) if eligible else None,
                        "abandoned_share": _r(abandoned / convs) if convs else 0.0,
                        "wait_p50": _r(percentile(ws, 50)), "wait_p90": _r(percentile(ws, 90))}
        return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def wait_summary(values: list[float]) -> dict[str, Any]:
    """Waits counting buyers who gave up at the time they left (a lower bound of what they
    would have waited): leaving them out flatters a policy that makes many give up."""
    ws = sorted(values)
    return {"count": len(ws), "mean": _r(sum(ws) / len(ws)) if ws else None, "p50": _r(percentile(ws, 50)),
            "p90": _r(percentile(ws, 90)), "p99": _r(percentile(ws, 99))}


def shift_label(windows: Any) -> str:
    """A readable name of a shift pattern: agents with the same one form a group."""
    if not windows:
        return "always"
    return ", ".join(f"{w.days} {w.start}-{w.end}" for w in windows)


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least ``p`` % of the values at or below it."""
    if not sorted_values:
        return None
    k = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[k - 1]


def gini(values: list[float]) -> float:
    """0 when everyone has the same, towards 1 when one has everything."""
    n = len(values)
    total = sum(values)
    if n == 0 or total <= 0:
        return 0.0
    ordered = sorted(values)
    weighted = sum((i + 1) * v for i, v in enumerate(ordered))
    return 2 * weighted / (n * total) - (n + 1) / n


def shift_seconds(schedule: Any, start: float, end: float) -> float:
    """Seconds of ``[start, end]`` inside a :class:`router.core.schedule.Schedule`."""
    if schedule.always:
        return end - start
    on = 0.0
    t = start
    while t < end:
        nxt = schedule.next_change(t)
        stop = end if nxt is None else min(nxt, end)
        if schedule.is_open(t):
            on += stop - t
        t = stop
    return on


def encode_results(results: dict[str, Any]) -> bytes:
    """Stable JSON: sorted keys, so the same seed gives byte-identical files."""
    return msgspec.json.format(msgspec.json.encode(results, order="sorted"), indent=2) + b"\n"
