"""Helpers shared by the benchmarks: result files, a rich table, and the demo's real rules."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"


def save(name: str, rows: list[dict[str, Any]], **extra: Any) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"name": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "python": platform.python_version(),
               "machine": platform.machine(), "rows": rows, **extra}
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def show(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*(f"{v:,.0f}" if isinstance(v, float) and v > 100 else f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)


DEMO = Path(__file__).resolve().parent.parent / "config"


def demo_rules(root: Path, shop_ids: tuple[str, str, str], policy: str = "p") -> None:
    """Copy the demo configuration's real plugin rules into ``root``: its Pinduoduo policy
    (``config/policies/default.toml``: sensitive words and patterns, the FAQ bot, skill rules,
    VIP scoring, the deadline queue) as ``policies/{policy}.toml``, the FAQ library and the word
    lists, with the demo's three shop ids renamed to ``shop_ids``. A benchmark run on plugins
    with no rules measures nothing users run (issue 17)."""
    def renamed(text: str) -> str:
        for old, new in zip(('"pdd-1001"', '"pdd-1002"', '"tb-2001"'), shop_ids, strict=True):
            text = text.replace(old, f'"{new}"')
        return text

    shutil.copytree(DEMO / "words", root / "words", dirs_exist_ok=True)
    (root / "faq").mkdir(exist_ok=True)
    for f in (DEMO / "faq").glob("*.toml"):
        (root / "faq" / f.name).write_text(renamed(f.read_text(encoding="utf-8")), encoding="utf-8")
    (root / "policies").mkdir(exist_ok=True)
    text = (DEMO / "policies" / "default.toml").read_text(encoding="utf-8")
    (root / "policies" / f"{policy}.toml").write_text(renamed(text), encoding="utf-8")


def cache_hit_rates() -> dict[str, float]:
    """Hit rate per exact-text cache (``router.core.textcache.text_cache``) so far in this process:
    how much of a figure comes from buyers repeating themselves."""
    from router.core.textcache import text_cache_stats

    return {name: round(hits / (hits + misses), 3) for name, (hits, misses, _) in text_cache_stats().items()
            if hits + misses}


def stop_processes(procs: Iterable[subprocess.Popen], timeout: float = 20.0) -> None:
    """Ask every server to stop first, then wait for each (killing one that hangs): stopping them
    one after another would make the total wait the sum of their shutdowns."""
    procs = list(procs)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


class ProcessCPU:
    """CPU time and run-queue wait of a server process and its children (the journal writer),
    thread by thread, from ``/proc`` (Linux; elsewhere it reports nothing).

    A server that is slow with its event loop "idle" part of the time may be waiting for the
    writer, or for a core another process holds: ``/proc/<tid>/schedstat``'s second field (time
    runnable but not running) tells the two apart, which CPU time alone cannot. On this shared
    2-core machine the batch benchmark's slow rounds had the loop 18–37 % runnable-waiting."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start = self._read()

    def _threads(self, pid: int) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return out
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii", errors="replace") as f:
                    stat = f.read()
                with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                    wait = int(f.read().split()[1]) / 1e9
            except (OSError, IndexError, ValueError):
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            out[tid] = ((int(fields[11]) + int(fields[12])) / self.tick, wait)
        return out

    def _read(self) -> dict[str, dict[str, tuple[float, float]]]:
        procs = {"server": self._threads(self.pid)}
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children", encoding="ascii") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            kids = []
        for k in kids:
            procs[f"child {k}"] = self._threads(k)
        return procs

    def since(self, items: int, seconds: float) -> list[str]:
        """One line per process with over 1 % of a core: µs of CPU per item (message or
        request), share of the wall time running, and share runnable but waiting for a core
        (its busiest thread: the event loop, the writer's main thread)."""
        now, lines = self._read(), []
        for name, threads in now.items():
            before = self.start.get(name, {})
            cpu = sum(c - before.get(t, (0.0, 0.0))[0] for t, (c, _) in threads.items())
            if cpu < 0.01 * seconds or not items:
                continue
            top = max(threads, key=lambda t: threads[t][0] - before.get(t, (0.0, 0.0))[0])
            run = threads[top][0] - before.get(top, (0.0, 0.0))[0]
            wait = threads[top][1] - before.get(top, (0.0, 0.0))[1]
            line = f"{name}: {cpu / items * 1e6:.1f} µs CPU each"
            if top in before:  # a thread new since the last reading counts from its start
                line += (f"; busiest thread running {run / seconds:.0%}, "
                         f"runnable but waiting for a core {wait / seconds:.0%}")
            else:
                line += " (started during the measurement: counted from its start)"
            lines.append(line)
        self.start = now
        return lines
