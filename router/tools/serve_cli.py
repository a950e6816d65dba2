"""``fenliu serve`` and ``fenliu accounts``: argument parsing and the commands' bodies. The
heavy modules (aiohttp, the service) are imported only when a command runs."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from router.core import i18n
from router.core.i18n import _, gettext, t
from router.core.logging import configure_logging
from router.tools.common import load_or_report


def register(add: Callable[[str, str], argparse.ArgumentParser], command: Callable[[str], Any]) -> None:
    p = add("serve", i18n.gettext("run the service: ingest, agents' WebSocket, accounts, metrics"))
    p.add_argument("--host", default=None, help=i18n.gettext("listen address (default: server.host)"))
    p.add_argument("--port", type=int, default=None, help=i18n.gettext("listen port (default: server.port; 0 picks a free one)"))
    p.add_argument("--simulate", action="store_true",
                   help=i18n.gettext("demo mode: simulated buyers and agents, demo secrets and accounts when missing"))
    p.add_argument("--rate", type=float, default=2.0, help=i18n.gettext("with --simulate: buyer messages per second (default 2)"))
    p.add_argument("--buyers", type=int, default=200, help=i18n.gettext("with --simulate: buyers per shop (default 200)"))
    p.add_argument("--store", default=None, help=i18n.gettext("SQLite file (default: storage.path)"))
    command("serve")(serve_command)

    p = add("accounts", i18n.gettext("manage accounts: main accounts (主账号) and sub-accounts (子账号)"))
    # --config and --store read the same before or after the action (`accounts list --config config`)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=i18n.gettext("configuration folder"))
    shared.add_argument("--store", default=argparse.SUPPRESS, help=i18n.gettext("SQLite file (default: storage.path)"))
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[shared])

    a = action("add", i18n.gettext("create an account"))
    a.add_argument("name", help=i18n.gettext("MAIN for a main account, MAIN:SUB for a sub-account"))
    a.add_argument("--role", choices=("agent", "supervisor", "admin"), default=None,
                   help=i18n.gettext("default: admin for a main account, agent for a sub-account"))
    a.add_argument("--shops", default=None,
                   help=i18n.gettext("comma-separated shop ids, or * (default: an agent's account gets its agent's shops; "
                        "another sub-account must name them)"))
    a.add_argument("--agent", default=None, help=i18n.gettext("agent id this account works as (role agent)"))
    a.add_argument("--password-stdin", action="store_true", help=i18n.gettext("read the password from standard input"))
    action("list", i18n.gettext("list accounts"))
    w = action("passwd", i18n.gettext("set a new password (existing tokens and open sockets stop working)"))
    w.add_argument("name")
    w.add_argument("--password-stdin", action="store_true", help=i18n.gettext("read the password from standard input"))
    for name, text in (("disable", i18n.gettext("refuse the account's logins, tokens and open sockets")),
                       ("enable", i18n.gettext("let a disabled account log in again")),
                       ("remove", i18n.gettext("delete the account (a main account: with its sub-accounts)"))):
        action(name, text).add_argument("name")
    for q in (p,):
        q.add_argument("--store", default=None, help=i18n.gettext("SQLite file (default: storage.path)"))
    command("accounts")(accounts_command)


def serve_command(args: argparse.Namespace) -> int:
    import asyncio

    from router.service.server import ensure_demo, serve_forever

    config = load_or_report(args)
    if config is None:
        return 1
    if "FENLIU_LOG_LEVEL" not in os.environ:
        configure_logging(config.main.logging.level, config.main.logging.format)
    if args.simulate:
        for line in ensure_demo(config, args.store):
            print(line, flush=True)
    else:
        for shop in config.shops.values():
            if shop.secret is None:
                print(gettext("warning: shop {shop}: no secret ({env}); its ingest requests will be refused with 401",
                              shop=shop.id, env=shop.secret_env or "secret_env unset"), file=sys.stderr)
    if args.store:
        import msgspec

        config.main.storage = msgspec.structs.replace(config.main.storage, path=args.store)
    try:
        return asyncio.run(serve_forever(config, args.host, args.port, args.simulate,
                                         {"rate": args.rate, "buyers": args.buyers}))
    except OSError as exc:
        print(gettext("error: cannot listen: {reason}", reason=exc.strerror or exc), file=sys.stderr)
        return 1


#: The roles as a person says them (the ids stay what --role takes).
ROLES = {"admin": _("admin"), "supervisor": _("supervisor"), "agent": _("agent")}


def role_label(role: str) -> str:
    return t(ROLES.get(role, role))


def _password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass(gettext("password: "))
    if getpass.getpass(gettext("again: ")) != first:
        print(gettext("error: passwords differ"), file=sys.stderr)
        return None
    return first


def accounts_command(args: argparse.Namespace) -> int:
    from router.storage import accounts as acct
    from router.service.access import agent_shops
    from router.storage.store import Store

    config = load_or_report(args)
    if config is None:
        return 1
    if config.main.storage.records == "postgres" and not args.store:  # created once, for every instance
        from router.storage.pg.records import open_records

        store: Any = open_records(config)
        if store is None:
            return 1
    else:
        store = Store(args.store or config.main.storage.path)
    try:
        if args.action == "list":
            rows = store.run_sync(acct.list_accounts)
            if not rows:
                print(gettext("no accounts (create one: fenliu accounts add NAME)"))
            for a in rows:
                agent = a.agent_id or next((i for i, ag in config.agents.items() if ag.account == a.name), None)
                print(f"{a.name}\t{role_label(a.role)}\t" + gettext("shops={shops}", shops=",".join(a.shops))
                      + ("\t" + gettext("agent={agent}", agent=agent) if agent else "")
                      + ("\t" + gettext("disabled") if a.disabled else ""))
            return 0
        if args.action in ("disable", "enable", "remove"):
            if args.action == "remove":
                store.run_sync(lambda c: acct.remove(c, args.name))
            else:
                store.run_sync(lambda c: acct.set_disabled(c, args.name, args.action == "disable"))
            done = {"disable": gettext("disabled"), "enable": gettext("enabled"), "remove": gettext("removed")}[args.action]
            print(gettext("{done} {name} (its open sockets close within a second)", done=done, name=args.name))
            return 0
        password = _password(args)
        if password is None:
            return 1
        if args.action == "add":
            shops = None if args.shops is None else tuple(s.strip() for s in args.shops.split(",") if s.strip())
            for s in shops or ():
                if s != "*" and s not in config.shops:
                    print(gettext("error: unknown shop {shop!r}", shop=s), file=sys.stderr)
                    return 1
            if args.agent is not None and args.agent not in config.agents:
                print(gettext("error: unknown agent {agent!r}", agent=args.agent), file=sys.stderr)
                return 1
            role = args.role or ("agent" if ":" in args.name else "admin")
            agent = args.agent or next((i for i, ag in config.agents.items() if ag.account == args.name), None)
            served = agent_shops(config, agent) if role == "agent" and agent else None
            a = store.run_sync(lambda c: acct.add(c, args.name, password, role, shops, args.agent, served,
                                                  require_agent=role == "agent"))
            print(gettext("created {name} ({role}, shops {shops})", name=a.name, role=role_label(a.role), shops=",".join(a.shops)))
        else:
            store.run_sync(lambda c: acct.passwd(c, args.name, password))
            print(gettext("password changed for {name}", name=args.name))
        return 0
    except acct.AccountError as exc:
        print(gettext("error: {reason}", reason=t(exc)), file=sys.stderr)
        return 1
    finally:
        store.close_sync()
