"""The FAQ bot's matcher (plugins/bot_match.py): cost per buyer message with 17 (the demo) and
500 FAQ entries, and the build time per configuration. Goal: under 50 µs a message at 500
entries. The 500 are the demo's entries plus synthetic ones (random product words, question
shapes and synonyms), so a message meets a realistic vocabulary and posting-list lengths.

    .venv/bin/python bench/bench_bot.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import save, show  # noqa: E402
from plugins import bot, bot_match  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("羽绒服", "外套", "围巾", "手套", "帽子", "橙子", "苹果", "耳机", "充电宝", "数据线", "手机壳", "背包", "鞋子",
         "袜子", "裤子", "裙子", "毛衣", "衬衫", "床单", "枕头", "杯子", "台灯", "键盘", "鼠标", "音箱", "茶叶", "蜂蜜")
TOPICS = ("颜色", "材质", "重量", "产地", "款式", "价格", "库存", "尺寸", "保修", "包装", "赠品", "安装", "说明书",
          "保质期", "配件", "型号", "功能", "电池", "续航", "清洗", "发货", "快递", "运费", "发票", "优惠")
SHAPES = ("{w}的{t}是什么", "{w}{t}怎么样", "请问{w}有{t}吗", "{w}的{t}能说一下吗", "想了解{w}的{t}", "{w}{t}多少")


def entries(n: int) -> list[tuple[str, ...]]:
    demo = [(*e.keywords, *e.questions) for _, e in bot.load_faq(ROOT / "config").faq]
    rng = random.Random(7)
    out = list(demo)
    while len(out) < n:
        w, t = rng.choice(WORDS), rng.choice(TOPICS)
        out.append(tuple(s.format(w=w, t=t) for s in rng.sample(SHAPES, 4)) + (f"{w}{t}",))
    return out[:n]


def per_message(matcher: bot_match.Matcher, texts: list[str], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for text in texts:
            matcher.match(text, "pdd-1001")
        best = min(best, (time.perf_counter() - start) / len(texts) * 1e6)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    labelled = [json.loads(line)["text"] for line in (ROOT / "tests/data/bot_faq_labelled.jsonl").read_text(encoding="utf-8").splitlines()]
    start = time.perf_counter()
    vocab = bot_match.build_vocabulary(ROOT / "config")
    vocab_ms = (time.perf_counter() - start) * 1e3
    rows = []
    for n in (17, 500, 2000):
        docs = entries(n)
        start = time.perf_counter()
        matcher = bot_match.Matcher(vocab, docs)
        build_ms = (time.perf_counter() - start) * 1e3
        tokens_us = min(_time_tokens(vocab, labelled) for _ in range(args.rounds))
        rows.append({"FAQ entries": str(len(docs)), "documents": str(len(matcher.doc_entry)),
                     "µs/message": per_message(matcher, labelled, args.rounds),
                     "of which segmenting µs": tokens_us, "build ms": build_ms})
    show(f"FAQ matcher, {len(labelled)} labelled buyer messages (vocabulary built once: {vocab_ms:.0f} ms)", rows)
    save("bot", rows, vocabulary_ms=vocab_ms, rounds=args.rounds)
    return 0


def _time_tokens(vocab: bot_match.Vocabulary, texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        vocab.tokens(bot_match.normalise(text))
    return (time.perf_counter() - start) / len(texts) * 1e6


if __name__ == "__main__":
    raise SystemExit(main())
