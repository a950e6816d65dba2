"""`fenliu stats` and `GET /v1/stats`: figures from the store, checked against a hand-computed
history written into a real SQLite store."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import msgspec
import pytest

from router.core.config import load_config
from router.core.models import CloseEvent, Decision, Message, Order, RatingEvent
from router.storage.stats import compute, parse_period
from router.storage.store import connect
from tests.conftest import T0  # 14:40 Shanghai time

enc = msgspec.json.encode


class History:
    def __init__(self, path: Path) -> None:
        self.conn = connect(path)
        self.seq = 0

    def message(self, shop: str, buyer: str, dt: float, action: str, agent: str | None = None, skill="presale"):
        self.seq += 1
        m = Message(shop, f"m{self.seq}", buyer, "在吗", ts=T0 + dt)
        self.conn.execute("INSERT INTO journal VALUES (?, 'message', ?, ?, ?, ?, ?)",
                          (self.seq, T0 + dt, shop, m.msg_id, m.conversation_id, enc(m)))
        self.decide(m.conversation_id, shop, action, agent, "message", skill, m.msg_id)

    def decide(self, cid, shop, action, agent, cause, skill="presale", msg_id=None):
        d = Decision(msg_id, shop, cid, action, agent, skill, cause=cause)
        self.conn.execute("INSERT INTO decisions (seq, msg_id, shop_id, conversation_id, action, agent_id, cause, body) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (self.seq, msg_id, shop, cid, action, agent, cause, enc(d)))

    def event(self, ev, dt: float):
        self.seq += 1
        self.conn.execute("INSERT INTO journal VALUES (?, 'event', ?, NULL, NULL, ?, ?)",
                          (self.seq, T0 + dt, getattr(ev, "conversation_id", None), enc(ev)))

    def tick(self, dt: float):
        self.seq += 1
        self.conn.execute("INSERT INTO journal VALUES (?, 'tick', ?, NULL, NULL, NULL, NULL)", (self.seq, T0 + dt))

    def reply(self, cid: str, agent: str, dt: float):
        shop, buyer = cid.split(":")
        self.conn.execute("INSERT INTO outbox (shop_id, conversation_id, buyer_id, agent_id, text, ts, next_at, acked) "
                          "VALUES (?, ?, ?, ?, '好的', ?, ?, ?)", (shop, cid, buyer, agent, T0 + dt, T0 + dt, T0 + dt))

    def order(self, shop: str, buyer: str, status: str, dt: float):
        o = Order("o-" + buyer, status, 99.0)
        self.conn.execute("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", (shop, o.order_id, buyer, enc(o).decode(), T0 + dt))


@pytest.fixture
def store(tmp_path) -> Path:
    path = tmp_path / "fenliu.db"
    h = History(path)
    a, b, c, d, e = "pdd-1001:b1", "pdd-1001:b2", "pdd-1001:b3", "pdd-1002:b4", "pdd-1001:b5"
    # A: answered in 60 s, then a follow-up answered in 30 s; closed, rated 5; the buyer then paid.
    h.message("pdd-1001", "b1", 0, "assigned", "a-01")
    h.reply(a, "a-01", 60)
    h.message("pdd-1001", "b1", 100, "assigned", "a-01")
    h.reply(a, "a-01", 130)
    h.event(CloseEvent(a, T0 + 200), 200)
    h.event(RatingEvent(a, 5, "很耐心"), 210)
    h.order("pdd-1001", "b1", "paid", 3600)
    # B: queued for 240 s, first reply after 390 s.
    h.message("pdd-1001", "b2", 10, "queued", skill="aftersale")
    h.tick(250)
    h.decide(b, "pdd-1001", "assigned", "a-02", "queue_drain", "aftersale")
    h.reply(b, "a-02", 400)
    h.event(CloseEvent(b), 500)
    # C: the bot answered; nobody needed.
    h.message("pdd-1001", "b3", 20, "answered")
    h.event(CloseEvent(c), 30)
    # D: at 06:40 local time, outside the 3-minute window.
    h.message("pdd-1002", "b4", -8 * 3600, "assigned", "a-03", "logistics")
    h.reply(d, "a-03", -8 * 3600 + 30)
    # E: blocked.
    h.message("pdd-1001", "b5", 40, "blocked")
    # A again: a new session of the same conversation id, answered in 10 s.
    h.message("pdd-1001", "b1", 1000, "assigned", "a-01")
    h.reply(a, "a-01", 1010)
    h.conn.close()
    del e
    return path


def test_hand_computed_figures(store, demo_config):
    import sqlite3

    config = load_config(demo_config)
    s = compute(sqlite3.connect(store), config)
    t = s.total
    assert (t.sessions, t.messages, t.blocked_only, t.bot_only, t.needed_human) == (6, 7, 1, 1, 4)
    assert (t.reply_3min_eligible, t.reply_3min_hits, t.reply_3min_rate) == (4, 2, 0.5)
    assert t.first_response_s_avg == pytest.approx((60 + 390 + 30 + 10) / 4)
    assert t.human_response_s_avg == pytest.approx((60 + 30 + 390 + 30 + 10) / 5)
    assert (t.queued_sessions, t.queue_wait_s_avg) == (1, 240)
    assert t.bot_answered_share == 0.2
    assert (t.ratings, t.rating_avg, t.satisfaction_rate) == (1, 5.0, 1.0)
    assert (t.converted, t.conversion_rate) == (2, 0.4)
    agents = {r.key: r for r in s.by_agent}
    assert {k: r.sessions for k, r in agents.items()} == {"a-01": 2, "a-02": 1, "a-03": 1}
    # B lapsed in the queue (at 190 s) before a-02 got it (at 250 s): the miss is the queue's.
    assert agents["a-01"].reply_3min_rate == 1.0 and agents["a-02"].reply_3min_eligible == 0
    # C, settled by the bot and closed without a human reply, is a miss nobody held: the queue's too.
    assert (s.queue.reply_3min_eligible, s.queue.reply_3min_hits) == (2, 0)
    shops = {r.key: r.sessions for r in s.by_shop}
    assert shops == {"pdd-1001": 5, "pdd-1002": 1}
    skills = {r.key: r.sessions for r in s.by_skill}
    assert skills["aftersale"] == 1 and skills["logistics"] == 1


def test_period_and_filters(store, demo_config):
    import sqlite3

    config = load_config(demo_config)
    conn = sqlite3.connect(store)
    assert compute(conn, config, since=T0 - 60).total.sessions == 5
    assert compute(conn, config, since=T0 + 500).total.sessions == 1
    assert compute(conn, config, shop="pdd-1002").total.sessions == 1
    assert compute(conn, config, agent="a-01").total.sessions == 2
    assert compute(conn, config, shops=["pdd-1002"]).total.sessions == 1
    since, until = parse_period("2025-11-23", "2025-11-24", "Asia/Shanghai")
    assert compute(conn, config, since=since, until=until).total.sessions == 6
    with pytest.raises(ValueError, match="from: expected YYYY-MM-DD"):
        parse_period("yesterday", None, "Asia/Shanghai")


def test_cli_table_csv_and_json(fenliu, store, demo_config, tmp_path):
    r = fenliu("stats", "--config", str(demo_config), "--store", str(store), "--json", "-")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["total"]["reply_3min_rate"] == 0.5
    out = tmp_path / "s.csv"
    r = fenliu("stats", "--config", str(demo_config), "--store", str(store), "--csv", str(out), "--shop", "pdd-1001")
    assert r.returncode == 0, r.stderr
    assert "Fenliu statistics" in r.stdout and "3-min" in r.stdout and "50.0%" in r.stdout
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    total = next(x for x in rows if x["group"] == "total")
    assert total["sessions"] == "5" and total["reply_3min_rate"] == "0.5"


def test_cli_errors(fenliu, demo_config, tmp_path, store):
    r = fenliu("stats", "--config", str(demo_config), "--store", str(tmp_path / "none.db"))
    assert r.returncode == 1 and "no store at" in r.stderr
    r = fenliu("stats", "--config", str(demo_config), "--store", str(store), "--from", "soon")
    assert r.returncode == 1 and "from: expected" in r.stderr and "Traceback" not in r.stderr
    r = fenliu("stats", "--config", str(demo_config), "--store", str(store), "--shop", "nope")
    assert r.returncode == 1 and "unknown shop 'nope'" in r.stderr


def test_pending_sessions_and_orders_asked_about(tmp_path, demo_config):
    import sqlite3

    path = tmp_path / "s.db"
    h = History(path)
    m = Message("pdd-1001", "q1", "b9", "我的订单发货了吗", ts=T0, order=Order("o-b9", "paid", 50.0))
    h.seq += 1
    h.conn.execute("INSERT INTO journal VALUES (?, 'message', ?, ?, ?, ?, ?)",
                   (h.seq, T0, m.shop_id, m.msg_id, m.conversation_id, enc(m)))
    h.decide(m.conversation_id, "pdd-1001", "assigned", "a-01", "message", msg_id="q1")
    h.order("pdd-1001", "b9", "shipped", 60)  # the order the buyer asked about, updated: no conversion
    h.message("pdd-1001", "b10", 200, "queued")  # unanswered, 50 s before the last input: pending
    h.message("pdd-1001", "b11", 250, "queued")
    h.conn.close()
    t = compute(sqlite3.connect(path), load_config(demo_config), now=T0 + 250).total
    assert t.converted == 0
    assert t.reply_3min_eligible == 1 and t.reply_3min_hits == 0, "b9 waited 250 s unanswered; b10, b11 are pending"


def test_the_reply_window_is_configurable(store, demo_config, tmp_path):
    import shutil
    import sqlite3

    from router.core.config import ConfigErrors

    cfg = tmp_path / "cfg"
    shutil.copytree(demo_config, cfg)
    main = cfg / "fenliu.toml"
    text = main.read_text(encoding="utf-8")
    main.write_text(text.replace('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\nreply_window = ["06:00", "23:00"]'),
                    encoding="utf-8")
    t = compute(sqlite3.connect(store), load_config(cfg)).total
    assert (t.reply_3min_eligible, t.reply_3min_hits) == (5, 3), "D (06:40, answered in 30 s) now counts"
    main.write_text(text.replace('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\nreply_window = ["8am", "23:00"]'),
                    encoding="utf-8")
    with pytest.raises(ConfigErrors) as exc:
        load_config(cfg)
    assert f"{main}: defaults.reply_window: expected HH:MM, got '8am'" in str(exc.value)
