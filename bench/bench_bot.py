"""The FAQ bot's matcher (plugins/bot_match.py): cost per buyer message with 17 (the demo) and
500 FAQ entries, and the build time per configuration. Goal: under 50 µs a message at 500
entries. Then what an agent waits for: the workbench's suggestions (``GET /v1/quick-replies``
with the buyer's message) from a real ``fenliu serve`` on loopback, p50/p99 (goal: 100 ms). The 500 are the demo's entries plus synthetic ones (random product words, question
shapes and synonyms), so a message meets a realistic vocabulary and posting-list lengths.

    .venv/bin/python bench/bench_bot.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
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
    latency = asyncio.run(suggestion_latency(labelled))
    show("workbench suggestions over HTTP (GET /v1/quick-replies?text=…), ms", [latency])
    save("bot", rows, vocabulary_ms=vocab_ms, rounds=args.rounds, suggestions_ms=latency)
    return 0


async def suggestion_latency(texts: list[str], n: int = 300) -> dict[str, float]:
    """p50/p99 of the suggestions an agent's composer asks for, against the demo configuration."""
    import os
    import tempfile

    import aiohttp

    from router.core.config import load_config
    from router.core.logging import configure_logging
    from router.service.server import DEMO_PASSWORD, DEMO_SECRET, Server, ensure_demo
    from router.core.signing import SIGNATURE_HEADER, sign

    configure_logging("warning")
    config = load_config(ROOT / "config")
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "bench.db")
        for shop in config.shops.values():
            os.environ[shop.secret_env] = DEMO_SECRET
        ensure_demo(config, store)
        server = await Server.start(config, port=0, store_path=store)
        try:
            async with aiohttp.ClientSession() as http:
                body = '{"shop_id":"pdd-1001","msg_id":"bench-1","buyer_id":"b-1","text":"在吗"}'.encode()
                await (await http.post(f"{server.url}/v1/shops/pdd-1001/messages", data=body,
                                       headers={SIGNATURE_HEADER: sign(DEMO_SECRET.encode(), body)})).read()
                login = await http.post(f"{server.url}/v1/auth/login", json={"account": "demo:a-01", "password": DEMO_PASSWORD})
                headers = {"Authorization": f"Bearer {(await login.json())['token']}"}
                times = []
                for i in range(n):
                    url = f"{server.url}/v1/quick-replies"
                    params = {"conversation_id": "pdd-1001:b-1", "text": texts[i % len(texts)]}
                    start = time.perf_counter()
                    async with http.get(url, params=params, headers=headers) as r:
                        await r.read()
                        assert r.status == 200, r.status
                    times.append((time.perf_counter() - start) * 1e3)
        finally:
            await server.stop()
    times.sort()
    return {"requests": float(n), "p50 ms": times[n // 2], "p99 ms": times[int(n * 0.99) - 1], "max ms": times[-1]}


def _time_tokens(vocab: bot_match.Vocabulary, texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        vocab.tokens(bot_match.normalise(text))
    return (time.perf_counter() - start) / len(texts) * 1e6


if __name__ == "__main__":
    raise SystemExit(main())
