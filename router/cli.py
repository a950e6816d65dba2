"""The ``fenliu`` command line (also ``python -m router``).

Input mistakes (bad config, bad lines, unknown shop) print a reason and set the exit status;
they never print a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio

from router import __version__, i18n
from router.config import Config, ConfigErrors, load_config
from router.logging import configure_logging

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        _COMMANDS[name] = fn
        return fn
    return deco


def load_or_report(args: argparse.Namespace) -> Config | None:
    """The configuration named by ``--config``, or ``None`` after printing its errors (one
    ``file: key.path: reason`` a line) on stderr."""
    try:
        return load_config(args.config)
    except ConfigErrors as exc:
        for e in exc.errors:
            print(e, file=sys.stderr)
        return None


@command("check")
def _check(args: argparse.Namespace) -> int:
    config = load_or_report(args)
    if config is None:
        return 1
    for info in config.plugins.infos:
        if info.status.startswith("failed"):
            print(f"warning: plugin {info.name}: {info.status}", file=sys.stderr)
    for policy in config.policies.values():  # sections that can tell what looks wrong (word lists)
        for field in policy.__struct_fields__:
            for warning in getattr(getattr(policy, field), "warnings", ()):
                print(f"warning: {warning}", file=sys.stderr)
    print(i18n.gettext("{config}: ok ({shops} shops, {agents} agents, {policies} policies)", config=args.config,
                       shops=len(config.shops), agents=len(config.agents), policies=len(config.policies)))
    return 0


@command("route")
def _route(args: argparse.Namespace) -> int:
    from router.pipeline import Router
    from router.route import route_lines

    config = load_or_report(args)
    if config is None:
        return 1
    if args.file in (None, "-"):
        source = sys.stdin.buffer
    else:
        try:
            source = open(args.file, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            print(f"{args.file}: {exc.strerror}", file=sys.stderr)
            return 1
    from router.runtime import tune_gc

    router = Router(config)
    tune_gc()
    out = sys.stdout.buffer
    try:
        bad = anyio.run(route_lines, router, source, out, sys.stderr)
    finally:
        out.flush()
        if source is not sys.stdin.buffer:
            source.close()
    return 1 if bad else 0


@command("plugins")
def _plugins(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    config = load_or_report(args)
    if config is None:
        return 1
    if args.json:
        import msgspec

        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(config.plugins.describe())) + b"\n")
        return 0
    table = Table(title=i18n.gettext("Fenliu plugins"))
    for col in (i18n._("name"), i18n._("status"), i18n._("origin"), i18n._("module"), i18n._("hooks")):
        table.add_column(i18n.t(col))
    for info in config.plugins.describe():
        table.add_row(info.name, info.status, info.origin, info.module, "\n".join(info.hooks))
    Console(width=max(120, Console().width)).print(table)
    return 0


@command("check-reply")
def _check_reply(args: argparse.Namespace) -> int:
    from router.pipeline import InputError, Router

    config = load_or_report(args)
    if config is None:
        return 1
    router = Router(config)
    try:
        result = anyio.run(router.check_reply, args.shop, args.text)
    except InputError as exc:
        print(i18n.gettext("error: {reason}", reason=i18n.t(exc)), file=sys.stderr)
        return 2
    if result.ok and not result.hits:
        print(i18n.gettext("ok"))
        return 0
    if result.ok:
        print(i18n.gettext("ok (masked): {text}", text=result.text))
        return 0
    print(i18n.gettext("blocked: {reason}", reason=i18n.t(result.reason or "")))
    for hit in result.hits:
        tag = f", {hit.tag}" if hit.tag else ""
        advice = f" → {hit.advice}" if hit.advice else ""
        print(f"  {hit.word!r} at {hit.start}-{hit.end} ({hit.source}{tag}): {args.text[hit.start:hit.end]!r}{advice}")
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fenliu", description="Multi-shop message router for e-commerce customer service.")
    parser.add_argument("--version", action="version", version=f"fenliu {__version__}")
    lang_help = "language of what fenliu prints: zh-CN (default) or en (default: $FENLIU_LANG, else zh-CN)"
    parser.add_argument("--lang", type=_lang, default=None, help=lang_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", default=os.environ.get("FENLIU_CONFIG", "config"), type=Path,
                       help="configuration folder (default: ./config or $FENLIU_CONFIG)")
        p.add_argument("--lang", type=_lang, default=argparse.SUPPRESS, help=lang_help)
        return p

    add("check", "validate the configuration; exit 1 with one error a line")
    p = add("route", "route JSONL messages and events offline; one decision a line on stdout")
    p.add_argument("file", nargs="?", help="JSONL file, or - for standard input (default)")
    p = add("plugins", "list plugins, their hooks and where they came from")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add("check-reply", "check an agent's reply against the outbound filters")
    p.add_argument("--shop", required=True, help="shop id whose policy applies")
    p.add_argument("text", help="the reply text")
    _add_extra_commands(sub, add)
    return parser


def _lang(value: str) -> str:
    lang = i18n.normalize(value)
    if lang is None:
        raise argparse.ArgumentTypeError(f"unsupported language {value!r} (zh-CN or en)")
    return lang


def _add_extra_commands(sub: argparse._SubParsersAction, add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Commands whose modules are heavier (server, simulator) register their arguments here."""
    from router import commands

    commands.register(add, command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(os.environ.get("FENLIU_LOG_LEVEL", "warning"), os.environ.get("FENLIU_LOG_FORMAT", "auto"))  # type: ignore[arg-type]
    previous = i18n.set_default(args.lang)  # --lang: what this command prints, and a server's default language
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        i18n.set_default(previous)
