"""The shape of the house (docs/architecture.md): no import cycle anywhere, the core importable
without a web server, a database or a cache, and no module or class grown past what a newcomer
reads in one sitting. The layer contracts themselves are import-linter's (``lint-imports`` in
``make test``, contracts in pyproject.toml)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("router", "plugins", "policies", "adapters")
MODULE_LINES = 600
CLASS_LINES = 400


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module (iterative: the graph has a few hundred)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def import_graph() -> dict[str, set[str]]:
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)
    return {m: {i for i in graph.find_modules_directly_imported_by(m) if i in graph.modules} for m in graph.modules}


def test_the_finder_sees_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    """Deferred imports inside functions count too: a cycle hidden in a function is still one."""
    cycles = strongly_connected(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" ↔ ".join(c) for c in cycles)


def test_the_core_imports_without_web_database_or_cache():
    """What ``route`` and ``simulate`` need loads with aiohttp, redis, sqlite3 and psycopg absent."""
    core = sorted(p.stem for p in (ROOT / "router" / "core").glob("*.py") if p.stem != "__init__")
    code = (
        "import sys\n"
        "for name in ('aiohttp', 'redis', 'sqlite3', '_sqlite3', 'psycopg', 'psycopg_pool'):\n"
        "    sys.modules[name] = None\n"
        f"for name in {core!r}:\n"
        "    __import__('router.core.' + name)\n"
        "import plugins.sensitive, plugins.skills, plugins.vip, policies\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_classes_stay_readable(path: Path):
    text = path.read_text(encoding="utf-8")
    lines = text.count("\n")
    assert lines <= MODULE_LINES, f"{path.relative_to(ROOT)}: {lines} lines (split it along a seam: docs/architecture.md)"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            assert size <= CLASS_LINES, f"{path.relative_to(ROOT)}: class {node.name} is {size} lines"
