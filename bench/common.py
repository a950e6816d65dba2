"""Helpers shared by the benchmarks: result files and a rich table."""

from __future__ import annotations

import json
import platform
import time
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
