"""``fenliu route`` against a ceiling: a minimal router doing only the unavoidable work on the
same inputs as ``bench_dispatch.py``, reported as a ratio per round (issue 22).

The ceiling decodes each line with msgspec, makes four direct hook-like calls (an ahocorasick-rs
scan of the demo's inbound word lists, a skill keyword lookup, a priority function and a bot
lookup), picks an agent from a heap of ``(load, agent)`` with a capacity check (or appends the
conversation to a deque when nobody has room), and encodes the decision with msgspec. Whatever
Fenliu spends beyond that is its own overhead: the isolation of hooks, context building, the
policy's features (expansion timers, stickiness, the deadline queue) and the plugins' rules.

Each round runs the ceiling and then ``route`` with no plugins, with the built-ins and no rules,
and with the demo's real rules, each on a fresh router over the same lines, timed in CPU seconds
of this process; the ratio (ceiling's time / route's time) is taken within the round, so the
machine's load, which moves both, cancels, and the median of the rounds is reported.

The workload repeats six texts, so with the demo's rules Fenliu's exact-text caches answer
nearly every plugin step while the ceiling scans every message; ``--no-text-cache`` measures
Fenliu without them.

Run: ``.venv/bin/python bench/bench_ceiling.py [--messages N] [--agents N] [--rounds N]
[--no-text-cache]``;
results go to ``bench/results/ceiling.json``.
"""

from __future__ import annotations

import argparse
import heapq
import statistics
import sys
import time
from collections import deque
from pathlib import Path

import ahocorasick_rs
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_dispatch import MODES, cli_gc, load, route_once, workload  # noqa: E402
from bench.common import DEMO, cache_hit_rates, save, show  # noqa: E402


class Line(msgspec.Struct, omit_defaults=True):
    """Either input kind of the workload: a buyer message or a close event."""

    type: str = "message"
    shop_id: str = ""
    msg_id: str = ""
    buyer_id: str = ""
    text: str = ""
    ts: float = 0.0
    conversation_id: str = ""


class Decision(msgspec.Struct):
    msg_id: str | None
    shop_id: str
    conversation_id: str
    action: str
    agent_id: str | None = None
    skill: str | None = None
    priority: int = 0
    reply: str | None = None
    text: str | None = None
    flags: list[str] = msgspec.field(default_factory=list)


SKILL_WORDS = {"退款": "aftersale", "坏了": "aftersale", "快递": "logistics", "到哪了": "logistics"}
BOT = {"什么时候发货": "亲，付款后48小时内发货哦~"}


def ceiling(lines: list[bytes], agents: int, cap: int = 5) -> tuple[float, int]:
    """CPU seconds of the minimal router over ``lines``, and its decisions."""
    words = [w for f in ("contact.txt", "abuse.txt") for w in
             (DEMO / "words" / f).read_text(encoding="utf-8").split() if not w.startswith("#")]
    ac = ahocorasick_rs.AhoCorasick(words, implementation=ahocorasick_rs.Implementation.DFA)
    decode = msgspec.json.Decoder(Line).decode
    encode = msgspec.json.Encoder().encode
    scan = ac.find_matches_as_indexes

    def sensitive(text: str) -> list[str]:
        return [f"sensitive:{words[i]}" for i, _, _ in scan(text)]

    def skill_of(text: str) -> str:
        for word, skill in SKILL_WORDS.items():
            if word in text:
                return skill
        return "presale"

    def priority(text: str) -> int:
        return 10 if "急" in text else 0

    load = [0] * agents
    heap = [(0, a) for a in range(agents)]
    names = [f"a{a:05d}" for a in range(agents)]
    owner: dict[str, int] = {}
    queue: deque[str] = deque()
    out = []
    with cli_gc():  # the collector as `fenliu route` runs it, for both
        start = time.process_time()
        for raw in lines:
            line = decode(raw)
            if line.type == "close":
                a = owner.pop(line.conversation_id, None)
                if a is not None:
                    load[a] -= 1
                    heapq.heappush(heap, (load[a], a))
                continue
            text = line.text
            flags = sensitive(text)
            skill = skill_of(text)
            prio = priority(text)
            reply = BOT.get(text)
            cid = f"{line.shop_id}:{line.buyer_id}"
            a = owner.get(cid)
            if a is None:
                while heap and heap[0][0] != load[heap[0][1]]:
                    heapq.heappop(heap)  # a stale entry: the agent's load changed since
                if heap and heap[0][0] < cap:
                    a = heapq.heappop(heap)[1]
                    load[a] += 1
                    heapq.heappush(heap, (load[a], a))
                    owner[cid] = a
                else:
                    queue.append(cid)
            d = Decision(line.msg_id, line.shop_id, cid, "assigned" if a is not None else "queued",
                         names[a] if a is not None else None, skill, prio, reply, text, flags)
            out.append(encode(d))
        elapsed = time.process_time() - start
    return elapsed, len(out)


def main() -> int:
    from router.core.logging import configure_logging

    # as the CLI configures it (so hot paths skip their debug lines), quieter
    configure_logging("warning")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-text-cache", action="store_true",
                        help="route without the exact-text caches (the workload repeats six texts)")
    args = parser.parse_args()
    if args.no_text_cache:
        import router.core.textcache

        router.core.textcache.TEXT_CACHE_MAX_CHARS = -1  # read when a configuration builds its caches
    lines = workload(args.messages)
    configs = {mode: load(args.agents, mode) for mode in MODES}
    per_round: dict[str, list[float]] = {m: [] for m in MODES}
    us: dict[str, list[float]] = {m: [] for m in ("ceiling", *MODES)}
    for _ in range(max(1, args.rounds)):
        base, n = ceiling(lines, args.agents)
        us["ceiling"].append(base / n * 1e6)
        for mode in MODES:
            cpu, decisions = route_once(configs[mode], lines)
            us[mode].append(cpu / decisions * 1e6)
            per_round[mode].append(base / n / (cpu / decisions))
    rows = [{"router": "ceiling", "us_per_decision": statistics.median(us["ceiling"]), "vs_ceiling": 1.0,
             "vs_ceiling_rounds": []}]
    for mode in MODES:
        rows.append({"router": f"route, {mode}", "us_per_decision": statistics.median(us[mode]),
                     "vs_ceiling": round(statistics.median(per_round[mode]), 3),
                     "vs_ceiling_rounds": [round(r, 3) for r in per_round[mode]]})
    show(f"route vs the ceiling, {args.agents:,} agents (median of {args.rounds} rounds; CPU µs per decision)",
         [{k: r[k] for k in ("router", "us_per_decision", "vs_ceiling")} for r in rows])
    rates = cache_hit_rates()
    print(f"exact-text cache hit rates (six distinct texts): {rates}")
    print(f"results: {save('ceiling', rows, messages=args.messages, agents=args.agents, text_cache_hit_rate=rates)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
