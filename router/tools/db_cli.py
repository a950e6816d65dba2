"""``fenliu db upgrade`` / ``fenliu db status``: the PostgreSQL records store's schema, by hand.

``fenliu serve`` applies pending migrations itself at start (under the same advisory lock);
these are for operators who migrate before a rolling restart, or want to see the version."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from router.core import i18n
from router.core.i18n import t
from router.tools.common import load_or_report

_ = i18n._


def register(add: Callable[[str, str], argparse.ArgumentParser], command: Callable[[str], Any]) -> None:
    p = add("db", i18n.gettext("the PostgreSQL records store's schema: upgrade or status"))
    p.add_argument("action", choices=("upgrade", "status"), help=i18n.gettext("upgrade: apply pending migrations; status: list them"))
    p.add_argument("--url", default=None, help=i18n.gettext("postgresql://… (default: storage.postgres_url, else $DATABASE_URL)"))
    command("db")(db_command)


def db_command(args: argparse.Namespace) -> int:
    url = args.url
    if not url:
        from router.storage.pg import database_url

        config = load_or_report(args)
        if config is None:
            return 1
        url = database_url(config.main.storage)
    if not url:
        print(t(_("error: no database: set storage.postgres_url, $DATABASE_URL or --url")), file=sys.stderr)
        return 1
    try:
        import psycopg

        from router.storage.pg import schema
    except ImportError:
        print(t(_("error: PostgreSQL support is not installed: pip install 'fenliu[postgres]'")), file=sys.stderr)
        return 1
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            if args.action == "upgrade":
                applied = schema.upgrade(conn)
                print(t(_("schema at version {version} ({count} migrations applied now)",
                          version=schema.LATEST, count=len(applied))))
                return 0
            st = schema.status(conn)
    except (psycopg.Error, RuntimeError) as exc:
        from router.storage.pg.records import reason

        print(t(_("error: {reason}", reason=reason(exc))), file=sys.stderr)
        return 1
    applied, pending = t(_("applied")), t(_("pending"))  # outside the f-strings, where Babel finds them
    for version, name, when in st.applied:
        print(f"{version:>4}  {name:<20} {applied} {when}")
    for m in st.pending:
        print(f"{m.version:>4}  {m.name:<20} {pending}")
    return 2 if st.pending else 0
