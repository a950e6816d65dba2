"""Schema migrations: applied once under the advisory lock, also when several processes start
together; ``fenliu db status`` / ``upgrade`` from the command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import psycopg

from router.storage.pg import schema
from tests.conftest import ROOT, run_fenliu


def test_concurrent_upgrades_apply_each_migration_once(pg_url: str) -> None:
    """Three processes and three threads upgrade the same empty database at once: every one
    succeeds, each migration ran exactly once (a second CREATE TABLE would have failed)."""
    procs = [subprocess.Popen([sys.executable, "-m", "router", "db", "upgrade", "--url", pg_url], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "FENLIU_LANG": "en"}) for _ in range(3)]
    applied: list[list[int]] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            with psycopg.connect(pg_url) as conn:
                applied.append(schema.upgrade(conn, instance="thread"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    outs = [p.communicate(timeout=60) for p in procs]
    assert not errors
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    from_procs = sum(int(re.findall(r"\d+", out)[1]) for out, _ in outs)  # "version N (K migrations applied now)"
    assert from_procs + sum(len(a) for a in applied) == len(schema.MIGRATIONS)
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert [v for (v,) in rows] == [m.version for m in schema.MIGRATIONS]
        assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (0,)


def test_db_status_and_upgrade_commands(pg_url: str) -> None:
    before = run_fenliu("db", "status", "--url", pg_url)
    assert before.returncode == 2, before.stderr
    assert "pending" in before.stdout
    up = run_fenliu("db", "upgrade", "--url", pg_url)
    assert up.returncode == 0, up.stderr
    assert f"schema at version {schema.LATEST}" in up.stdout
    after = run_fenliu("db", "status", "--url", pg_url)
    assert after.returncode == 0 and "applied" in after.stdout and "pending" not in after.stdout


def test_db_command_reports_bad_database_without_traceback() -> None:
    out = run_fenliu("db", "status", "--url", "postgresql://postgres@127.0.0.1:1/nowhere")
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr


def test_newer_schema_is_refused(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        schema.upgrade(conn)
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, 'future')", (schema.LATEST + 1,))
    out = run_fenliu("db", "upgrade", "--url", pg_url)
    assert out.returncode == 1 and "newer than this Fenliu knows" in out.stderr


def test_commands_without_a_database_say_why(tmp_path, demo_config) -> None:
    """``records = "postgres"`` with no URL: ``fenliu stats``, ``accounts``, ``db`` and ``faq mine`` name the
    settings to set, exit 1, no traceback."""
    import shutil

    cfg = tmp_path / "config"
    shutil.copytree(demo_config, cfg)
    main = (cfg / "fenliu.toml").read_text(encoding="utf-8")
    main = "\n".join(line for line in main.splitlines() if not line.startswith("backend"))
    (cfg / "fenliu.toml").write_text(main.replace("[storage]", '[storage]\nbackend = "redis"\nrecords = "postgres"', 1),
                                     encoding="utf-8")
    env = {"DATABASE_URL": ""}
    for args in (["stats"], ["accounts", "list"], ["db", "status"], ["faq", "mine"]):
        out = run_fenliu(*args, "--config", str(cfg), env=env)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert "no database" in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
