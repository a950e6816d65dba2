"""Decisions per second of ``fenliu route``'s core (decode → hooks → dispatch → encode, no file
I/O) with 10, 1,000 and 10,000 agents: no plugins, the built-ins with no rules, and the built-ins
with the demo's real rules (its Pinduoduo policy, FAQ library and word lists).

The workload keeps fewer conversations open than the smallest team can hold, so every run does the
same work per message (no queueing) and only the number of agents changes: picking an agent is a
heap operation, so the 10,000-agent figure should stay close to the 10-agent one.
Times are CPU seconds of this process (best of three), so a busy machine disturbs them less.
Run: ``.venv/bin/python bench/bench_dispatch.py [MESSAGES]``.
"""

from __future__ import annotations

import contextlib
import gc
import io
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import demo_rules, save, show  # noqa: E402
from router.core.config import load_config  # noqa: E402
from router.core.pipeline import Router  # noqa: E402
from router.core.runtime import tune_gc  # noqa: E402
from router.tools.route import route_lines  # noqa: E402

SHOPS = 10
SKILLS = ("presale", "aftersale", "logistics")
T0 = 1763880000.0


#: The plugin settings measured: none, the built-ins with no rules, the demo's real rules.
MODES = ("none", "built-ins", "demo rules")


def make_config(root: Path, agents: int, plugins: str = "demo rules") -> Path:
    rng = random.Random(7)
    root.mkdir(parents=True, exist_ok=True)
    disabled = '["sensitive", "bot", "skills", "vip"]' if plugins == "none" else "[]"
    (root / "fenliu.toml").write_text(f"[plugins]\ndisabled = {disabled}\n")
    platform = 'platform = "pinduoduo"\n' if plugins == "demo rules" else ""
    (root / "shops.toml").write_text("".join(f'[[shops]]\nid = "s{i}"\npolicy = "p"\n{platform}' for i in range(SHOPS)))
    lines = []
    for i in range(agents):
        skills = rng.sample(SKILLS, 2) if i >= len(SKILLS) else list(SKILLS)
        shops = [f"s{j}" for j in rng.sample(range(SHOPS), 3)] if i >= SHOPS else ["*"]
        if plugins == "demo rules" and i % 10 == 0:
            skills.append("vip")  # the demo policy sends VIP buyers to a vip group first
        lines.append(f'[[agents]]\nid = "a{i:05d}"\nskills = {skills!r}\nshops = {shops!r}\nmax_concurrent = 5\n'.replace("'", '"'))
    (root / "agents.toml").write_text("".join(lines))
    (root / "policies").mkdir(exist_ok=True)
    if plugins == "demo rules":
        demo_rules(root, ("s0", "s1", "s2"))
    else:
        (root / "policies" / "p.toml").write_text(
            '[dispatch]\nstrategy = "least_load"\ndefault_skill = "presale"\n'
            'targets = [{ skills = ["@skill"], timeout_s = 60 }, { skills = ["presale", "aftersale", "logistics"] }]\n'
        )
    return root


def workload(n_messages: int, open_max: int = 8) -> list[bytes]:
    """Buyers write 1–4 messages each, then the agent closes; ``open_max`` conversations at once."""
    rng = random.Random(11)
    texts = ["在吗?这件有货吗", "我的快递到哪了", "我要退款,东西坏了", "能便宜点吗", "什么时候发货", "尺码怎么选"]
    enc = msgspec.json.encode
    out: list[bytes] = []
    open_convs: list[tuple[str, str, int]] = []
    buyer = 0
    ts = T0
    n = 0
    while n < n_messages:
        ts += 0.01
        if len(open_convs) < open_max and (not open_convs or rng.random() < 0.4):
            buyer += 1
            open_convs.append((f"s{rng.randrange(SHOPS)}", f"b{buyer}", rng.randint(1, 4)))
        i = rng.randrange(len(open_convs))
        shop, b, left = open_convs[i]
        n += 1
        out.append(enc({"shop_id": shop, "msg_id": f"m{n}", "buyer_id": b, "text": rng.choice(texts), "ts": ts}))
        if left <= 1:
            open_convs.pop(i)
            out.append(enc({"type": "close", "conversation_id": f"{shop}:{b}", "ts": ts + 0.001}))
        else:
            open_convs[i] = (shop, b, left - 1)
    return out


def load(agents: int, plugins: str):
    with tempfile.TemporaryDirectory() as tmp:
        return load_config(make_config(Path(tmp) / "c", agents, plugins))


@contextlib.contextmanager
def cli_gc() -> Iterator[None]:
    """The collector as ``fenliu route`` runs it (:func:`router.core.runtime.tune_gc` with its
    batch thresholds after building the router: what exists is frozen, collections are rarer),
    undone afterwards.
    Without it a full collection of the benchmark's own start-up heap (configurations, the
    automata, imported modules: ≈100 ms) landed in one timed run or another, in the ceiling's as
    often as in ``route``'s, and moved a round's ratio by up to 2×."""
    thresholds = gc.get_threshold()
    tune_gc()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def route_once(config, lines: list[bytes]) -> tuple[float, int]:
    """CPU seconds of one ``route`` run over ``lines`` with a fresh router, and its decisions."""
    router = Router(config)
    out = io.BytesIO()
    err = io.StringIO()
    with cli_gc():
        start = time.process_time()
        bad = anyio.run(route_lines, router, lines, out, err)
        elapsed = time.process_time() - start
    assert bad == 0, err.getvalue()[:500]
    return elapsed, out.getvalue().count(b"\n")


def run(agents: int, lines: list[bytes], plugins: str) -> dict[str, object]:
    config = load(agents, plugins)
    best = float("inf")
    decisions = 0
    for _ in range(3):
        elapsed, decisions = route_once(config, lines)
        best = min(best, elapsed)
    return {"agents": agents, "plugins": plugins,
            "decisions": decisions, "cpu_s": round(best, 3), "decisions_per_s": decisions / best}


def main() -> None:
    from router.core.logging import configure_logging

    # as the CLI configures it (so hot paths skip their debug lines), quieter
    configure_logging("warning")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60_000
    lines = workload(n)
    rows = []
    for plugins in MODES:
        for agents in (10, 1_000, 10_000):
            rows.append(run(agents, lines, plugins))
    for plugins in MODES:
        group = [r for r in rows if r["plugins"] == plugins]
        base = group[0]["decisions_per_s"]
        for r in group:
            r["vs_10_agents"] = round(r["decisions_per_s"] / base, 3)  # type: ignore[operator]
    show("fenliu route core: decisions per second", rows)
    print(f"results: {save('dispatch', rows, messages=n)}")


if __name__ == "__main__":
    main()
