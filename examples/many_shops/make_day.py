"""A recorded sale day over many shops, for ``fenliu simulate --traffic``: the generator the
issue-17 comparison (README, docs/simulate.md) runs on.

It writes, into ``OUT`` (default ``var/many_shops``):

- ``config/``: the demo configuration (its policies, FAQ and word lists) with 20 shops — the
  three demo shops and 17 more, 14 on Pinduoduo and 6 on Taobao — and 31 agents: the seven demo
  agents plus, for each pair of new shops, a presale/logistics agent, a presale agent and an
  after-sale/logistics agent, on an early (08:00–17:00) or a late (14:00–23:00) shift;
- ``day.jsonl``: one day of buyers as JSONL with ``ts`` (what ``fenliu route`` takes), drawn
  from ``scenario.toml`` beside this file: mixed presale, logistics and after-sale chats (and
  VIP buyers), several messages each, a weekday curve with the 10:00 and 20:00–22:00 rushes,
  and a ``close`` line after each conversation.

Run ``.venv/bin/python examples/many_shops/make_day.py [OUT] [--seed N]``, then
``fenliu simulate --config OUT/config --traffic OUT/day.jsonl --scenario examples/many_shops/scenario.toml --baseline --seeds 5``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from router.core.config import load_config  # noqa: E402
from router.tools.scenario import generate, load_scenario, write_jsonl  # noqa: E402

EXTRA_SHOPS = 17


def make_config(out: Path) -> Path:
    demo = ROOT / "config"
    cfg = out / "config"
    if cfg.exists():
        shutil.rmtree(cfg)
    shutil.copytree(demo, cfg, ignore=shutil.ignore_patterns("scenarios", "*.db", "var"))
    shops = [(demo / "shops.toml").read_text(encoding="utf-8")]
    agents = [(demo / "agents.toml").read_text(encoding="utf-8")]
    ids = []
    for i in range(EXTRA_SHOPS):
        pdd = i < 11
        sid = f"pdd-3{i:03d}" if pdd else f"tb-4{i:03d}"
        ids.append(sid)
        hours = '"08:00", end = "23:00"' if pdd else '"09:00", end = "24:00"'
        shops.append(f'\n[[shops]]\nid = "{sid}"\nname = "店铺{i + 4}"\nplatform = "{"pinduoduo" if pdd else "taobao"}"\n'
                     f'adapter = "bridge"\npolicy = "{"default" if pdd else "vip"}"\n'
                     f'business_hours = [{{ days = "mon-sun", start = {hours} }}]\n')
    shifts = ('[{ days = "mon-sun", start = "08:00", end = "17:00" }]', '[{ days = "mon-sun", start = "14:00", end = "23:00" }]')
    n = 8
    for k in range(0, EXTRA_SHOPS, 2):
        pair = ", ".join(f'"{s}"' for s in ids[k:k + 2])
        for j, (skills, cap) in enumerate(((["presale", "logistics"], 5), (["presale"], 5), (["aftersale", "logistics"], 4))):
            sk = ", ".join(f'"{s}"' for s in skills)
            agents.append(f'\n[[agents]]\nid = "a-{n:02d}"\nskills = [{sk}]\nshops = [{pair}]\nmax_concurrent = {cap}\n'
                          f"schedule = {shifts[(k // 2 + j) % 2]}\n")
            n += 1
    (cfg / "shops.toml").write_text("".join(shops), encoding="utf-8")
    (cfg / "agents.toml").write_text("".join(agents), encoding="utf-8")
    return cfg


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", type=Path, default=ROOT / "var" / "many_shops")
    p.add_argument("--seed", type=int, default=2025)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg_dir = make_config(args.out)
    config = load_config(cfg_dir)
    scenario = load_scenario(HERE / "scenario.toml", config)
    n = write_jsonl(generate(scenario, config, args.seed), args.out / "day.jsonl")
    print(f"{len(config.shops)} shops, {len(config.agents)} agents: {cfg_dir}")
    print(f"{n} conversations: {args.out / 'day.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
