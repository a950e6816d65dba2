"""``fenliu faq mine``: a planted day in a store; the command finds the pattern and the questions
agents answered with FAQ texts, as TOML, and changes nothing."""

from __future__ import annotations

import tomllib

import msgspec

from router.core.models import Decision, Message
from router.storage.store import connect
from tests.conftest import ROOT, T0, run_fenliu


def planted_day() -> list[tuple[str, str, str, float, list[str], str | None]]:
    """``(shop, buyer, text, clock, flags, reply)`` rows of one day (2025-11-23) and a later one."""
    rows: list[tuple[str, str, str, float, list[str], str | None]] = []

    def message(shop, buyer, text, clock, flags=(), reply=None):
        rows.append((shop, buyer, text, clock, list(flags), reply))

    t = T0
    # the planted pattern: buyers asking for delivery to the door, which no entry covers
    for i, text in enumerate(["能送货上门吗", "可以送货上门吗", "能送货上门吗", "送货上门吗", "能不能送货上门", "能送货上门吗", "可以送货上门吗"]):
        message("pdd-1001", f"door-{i}", text, t + i * 60)
    # agents answered paraphrases the bot missed with the FAQ's answer and with a quick reply
    message("pdd-1001", "b-1", "拍完隔多久给寄", t + 600, reply="小王，现货商品付款后48小时内发货，预售商品以详情页标注的时间为准哦~")
    message("pdd-1002", "b-2", "拍完隔多久给寄", t + 660, reply="亲，现货商品付款后48小时内发货，预售商品以详情页标注的时间为准~")
    message("tb-2001", "b-3", "运单号能发我吗", t + 700, reply="亲，麻烦提供一下订单号，我马上为您查询物流~")
    # an agent's own words, the bot's own answers, rare questions and another day: not proposed
    message("pdd-1001", "b-4", "这件能便宜吗", t + 800, reply="这件已经是最低价了哦")
    message("tb-2001", "b-5", "有没有优惠券", t + 900, flags=["bot:settle:coupon"])
    message("pdd-1001", "b-6", "有赠品吗", t + 1000)
    message("pdd-1001", "b-7", "有赠品吗", t + 1100)
    for i in range(5):
        message("pdd-1001", f"late-{i}", "能开发票到付吗", t + 3 * 86400 + i)
    return rows


def plant(path) -> None:
    conn = connect(path)
    for seq, (shop, buyer, text, clock, flags, reply) in enumerate(planted_day(), 1):
        msg = Message(shop_id=shop, msg_id=f"m-{seq}", buyer_id=buyer, text=text, ts=clock)
        conn.execute("INSERT INTO journal (seq, kind, clock, shop_id, msg_id, conversation_id, body) VALUES (?, 'message', ?, ?, ?, ?, ?)",
                     (seq, clock, shop, msg.msg_id, msg.conversation_id, msgspec.json.encode(msg)))
        d = Decision(msg.msg_id, shop, msg.conversation_id, "assigned", "a-01", "presale", flags=flags)
        conn.execute("INSERT INTO decisions (seq, msg_id, shop_id, conversation_id, action, agent_id, cause, body) "
                     "VALUES (?, ?, ?, ?, 'assigned', 'a-01', 'message', ?)", (seq, msg.msg_id, shop, msg.conversation_id, msgspec.json.encode(d)))
        if reply is not None:
            conn.execute("INSERT INTO outbox (shop_id, conversation_id, buyer_id, agent_id, text, ts, next_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (shop, msg.conversation_id, buyer, "a-01", reply, clock + 30, clock + 30))
    conn.close()


def check_mined(r) -> None:
    """What ``faq mine --from 2025-11-23 --to 2025-11-24`` prints for the planted day."""
    assert r.returncode == 0, r.stderr
    data = tomllib.loads(r.stdout)
    proposals = {p["entry"]: p for p in data["proposal"]}
    assert proposals["ship-time"]["questions"] == ["拍完隔多久给寄"] and proposals["ship-time"]["counts"] == [2]
    assert proposals["tracking"]["questions"] == ["运单号能发我吗"]
    assert set(proposals) == {"ship-time", "tracking"}
    [cluster] = data["cluster"]
    assert cluster["count"] == 7 and cluster["shops"] == ["pdd-1001"]
    assert cluster["examples"][0] == "能送货上门吗" and "可以送货上门吗" in cluster["examples"]
    assert "这件能便宜吗" not in r.stdout and "有赠品吗" not in r.stdout and "能开发票到付吗" not in r.stdout


def test_faq_mine_finds_the_planted_pattern_and_the_agents_answers(tmp_path):
    store = tmp_path / "fenliu.db"
    plant(store)
    faq_before = {f.name: f.read_bytes() for f in (ROOT / "config" / "faq").iterdir()}
    r = run_fenliu("faq", "mine", "--config", str(ROOT / "config"), "--store", str(store),
                   "--from", "2025-11-23", "--to", "2025-11-24")
    check_mined(r)
    assert {f.name: f.read_bytes() for f in (ROOT / "config" / "faq").iterdir()} == faq_before  # nothing changes


def test_faq_mine_reports_bad_arguments(tmp_path):
    r = run_fenliu("faq", "mine", "--config", str(ROOT / "config"), "--store", str(tmp_path / "none.db"))
    assert r.returncode == 1 and "no store at" in r.stderr
    r = run_fenliu("faq", "mine", "--config", str(ROOT / "config"), "--store", str(tmp_path / "none.db"), "--shop", "nope")
    assert r.returncode == 1 and "unknown shop 'nope'" in r.stderr
