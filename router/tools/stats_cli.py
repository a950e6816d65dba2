"""``fenliu stats``: the service's figures for a period, from the store, as a table, CSV or JSON —
the same figures as the dashboard's (router/storage/figures.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from router.core import i18n
from router.core.i18n import t
from router.tools.common import load_or_report

if TYPE_CHECKING:
    from router.core.config import Config

_ = i18n._
_SHOWN = (
    ("sessions", _("sessions")), ("messages", _("msgs")), ("first_response_s_avg", _("first resp s")),
    ("human_response_s_avg", _("avg resp s")), ("reply_3min_rate", _("3-min rate")), ("queue_wait_s_avg", _("queue wait s")),
    ("transfers", _("transfers")), ("bot_answered_share", _("bot share")), ("rating_avg", _("rating")),
    ("satisfaction_rate", _("satisfied")), ("conversion_rate", _("conversion")),
)


def register(add: Callable[[str, str], argparse.ArgumentParser], command: Callable[[str], Any]) -> None:
    p = add("stats", i18n.gettext("service statistics for a period, computed from the store"))
    p.add_argument("--from", dest="since", default=None, help=i18n.gettext("start: YYYY-MM-DD, ISO date-time or epoch (shop time zone)"))
    p.add_argument("--to", dest="until", default=None, help=i18n.gettext("end (exclusive), same forms as --from"))
    p.add_argument("--shop", default=None, help=i18n.gettext("only this shop"))
    p.add_argument("--agent", default=None, help=i18n.gettext("only what is charged to this agent (docs/stats.md)"))
    p.add_argument("--csv", default=None, metavar="FILE", help=i18n.gettext("also write every row as CSV (- for stdout)"))
    p.add_argument("--json", default=None, metavar="FILE", help=i18n.gettext("also write the figures as JSON (- for stdout)"))
    p.add_argument("--store", default=None, help=i18n.gettext("SQLite file (default: storage.path)"))
    command("stats")(stats_command)


class StoreRead(NamedTuple):
    """What a command that reads a period from the store starts from."""

    config: Config
    since: float | None
    until: float | None
    path: Path


def open_period(args: argparse.Namespace) -> StoreRead | None:
    """The configuration, the period (``--from``/``--to``), the store and the ``--shop`` (and
    ``--agent``, where the command has one) checked, or ``None`` after printing why not."""
    from router.storage.stats import parse_period

    config = load_or_report(args)
    if config is None:
        return None
    try:
        since, until = parse_period(args.since, args.until, config.main.defaults.timezone)
    except ValueError as exc:
        print(t(_("error: {reason}", reason=exc.args[0] if exc.args else str(exc))), file=sys.stderr)
        return None
    if args.shop is not None and args.shop not in config.shops:
        print(t(_("error: unknown shop {shop!r}", shop=args.shop)), file=sys.stderr)
        return None
    agent = getattr(args, "agent", None)
    if agent is not None and agent not in config.agents:
        print(t(_("error: unknown agent {agent!r}", agent=agent)), file=sys.stderr)
        return None
    path = Path(args.store or config.main.storage.path)
    if config.main.storage.records == "postgres" and not args.store and args.command in ("stats", "faq"):  # read there
        return StoreRead(config, since, until, path)
    if not path.exists():
        print(t(_("error: no store at {path} (has `fenliu serve` run with this configuration?)", path=path)), file=sys.stderr)
        return None
    return StoreRead(config, since, until, path)


def stats_command(args: argparse.Namespace) -> int:
    from router.storage.stats import compute, to_csv
    from router.storage.store import connect

    read = open_period(args)
    if read is None:
        return 1
    if read.config.main.storage.records == "postgres" and not args.store:
        from router.storage.pg.records import read_stats

        try:
            stats = read_stats(read.config, since=read.since, until=read.until, shop=args.shop, agent=args.agent)
        except Exception as exc:  # noqa: BLE001 - the database unreachable or not set: say why
            from router.storage.pg.records import reason

            print(t(_("error: {reason}", reason=reason(exc))), file=sys.stderr)
            return 1
    else:
        conn = connect(read.path)
        try:
            stats = compute(conn, read.config, since=read.since, until=read.until, shop=args.shop, agent=args.agent)
        finally:
            conn.close()
    if args.csv:
        _write(args.csv, to_csv(stats))
    if args.json:
        _write(args.json, msgspec.json.format(msgspec.json.encode(stats)).decode() + "\n")
    if args.csv != "-" and args.json != "-":
        _table(stats)
    return 0


def _write(target: str, text: str) -> None:
    if target == "-":
        sys.stdout.write(text)
    else:
        Path(target).write_text(text, encoding="utf-8")


def _fmt(value: Any, key: str) -> str:
    if value is None:
        return "-"
    if key.endswith(("rate", "share")):
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _table(stats: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=t(_("Fenliu statistics")))
    table.add_column(t(_("group")))
    for _key, title in _SHOWN:
        table.add_column(t(title), justify="right")
    names = {"all": _("all"), "shop": _("shop"), "skill": _("skill"), "agent": _("agent"), "queue": _("queue")}
    for group, rows in (("all", [stats.total]), ("shop", stats.by_shop), ("skill", stats.by_skill),
                        ("agent", stats.by_agent), ("queue", [stats.queue] if stats.queue else [])):
        for r in rows:
            table.add_row(f"{t(names[group])} {r.key}" if group not in ("all", "queue") else t(names[group]),
                          *(_fmt(getattr(r, k), k) for k, _ in _SHOWN))
    console = Console(width=max(140, Console().width))
    console.print(table)
    if stats.violations:  # 客服质检: forbidden words in refused replies, per agent and category
        found = Table(title=t(_("Refused replies: forbidden words per agent and category")))
        for title in (_("agent"), _("category"), _("hits"), _("most frequent words")):
            found.add_column(t(title))
        for v in stats.violations:
            found.add_row(v.agent_id or "-", v.tag or "-", str(v.hits), "、".join(v.words))
        console.print(found)
