"""``fenliu faq mine`` with ``records = "postgres"``: the shared history of every instance, not
the SQLite file of the one the command runs beside, finds the same planted day."""

from __future__ import annotations

import shutil

import msgspec
import psycopg

from router.core.models import Decision, Message
from router.storage.pg import schema
from tests.conftest import ROOT, run_fenliu
from tests.plugins.test_bot_mine import check_mined, planted_day


def plant_postgres(url: str) -> None:
    with psycopg.connect(url) as conn:
        schema.upgrade(conn)
        for seq, (shop, buyer, text, clock, flags, reply) in enumerate(planted_day(), 1):
            msg = Message(shop_id=shop, msg_id=f"m-{seq}", buyer_id=buyer, text=text, ts=clock)
            d = Decision(msg.msg_id, shop, msg.conversation_id, "assigned", "a-01", "presale", flags=flags)
            conn.execute("INSERT INTO history (entry, kind, clock, shop_id, msg_id, conversation_id, body, decisions, instance) "
                         "VALUES (%s, 'message', %s, %s, %s, %s, %s, %s::jsonb, %s)",
                         (f"m:{shop}:{msg.msg_id}", clock, shop, msg.msg_id, msg.conversation_id, msgspec.json.encode(msg),
                          msgspec.json.encode([d]).decode(), f"node-{seq % 3}"))  # written by three instances
            if reply is not None:
                conn.execute("INSERT INTO outbox (shop_id, conversation_id, buyer_id, agent_id, text, ts, next_at) "
                             "VALUES (%s, %s, %s, 'a-01', %s, %s, %s)", (shop, msg.conversation_id, buyer, reply, clock + 30, clock + 30))


def test_faq_mine_reads_the_shared_history(tmp_path, pg_url):
    plant_postgres(pg_url)
    cfg = tmp_path / "config"
    shutil.copytree(ROOT / "config", cfg)
    main = (cfg / "fenliu.toml").read_text(encoding="utf-8")
    main = "\n".join(line for line in main.splitlines() if not line.startswith("backend"))
    (cfg / "fenliu.toml").write_text(
        main.replace("[storage]", f'[storage]\nbackend = "redis"\nrecords = "postgres"\npostgres_url = "{pg_url}"', 1),
        encoding="utf-8")
    r = run_fenliu("faq", "mine", "--config", str(cfg), "--from", "2025-11-23", "--to", "2025-11-24", cwd=tmp_path)
    check_mined(r)
    assert not (tmp_path / "fenliu.db").exists() and not (cfg / "fenliu.db").exists()  # no SQLite file was read or made
