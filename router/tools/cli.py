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
from typing import NoReturn

import anyio

from router import __version__

from router.core import i18n
from router.core.logging import configure_logging
from router.tools import commands
from router.tools.common import load_or_report

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        _COMMANDS[name] = fn
        return fn
    return deco


@command("check")
def _check(args: argparse.Namespace) -> int:
    config = load_or_report(args)
    if config is None:
        return 1
    for info in config.plugins.infos:
        if info.status.startswith("failed"):
            print(i18n.gettext("warning: plugin {name}: {status}", name=info.name, status=i18n.t(info.status)), file=sys.stderr)
    for policy in config.policies.values():  # sections that can tell what looks wrong (word lists)
        for field in policy.__struct_fields__:
            for warning in getattr(getattr(policy, field), "warnings", ()):
                print(i18n.gettext("warning: {warning}", warning=_warning(warning)), file=sys.stderr)
    print(i18n.gettext("{config}: ok ({shops} shops, {agents} agents, {policies} policies)", config=args.config,
                       shops=len(config.shops), agents=len(config.agents), policies=len(config.policies)))
    return 0


def _warning(text: str) -> str:
    """A section's ``file: key: reason`` warning with the reason in the current language."""
    parts = text.split(": ", 2)
    if len(parts) < 3:
        return i18n.t(text)
    return i18n.gettext("{file}: {key}: {reason}", file=parts[0], key=parts[1], reason=i18n.t(parts[2]))


@command("route")
def _route(args: argparse.Namespace) -> int:
    from router.core.pipeline import Router
    from router.tools.route import route_lines

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
    from router.core.runtime import tune_gc

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


#: What the plugins table shows as a status or an origin (router/core/plugins.py), for t() to translate.
_PLUGIN_WORDS = (i18n._("loaded"), i18n._("disabled"), i18n._("not enabled"), i18n._("failed: {error}"), i18n._("builtin"),
                 i18n._("module"), i18n._("test"), i18n._("third-party"), i18n._("entry point"), i18n._("entry point ({dist})"))


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
        table.add_row(info.name, i18n.t(info.status), i18n.t(info.origin), info.module, "\n".join(info.hooks))
    Console(width=max(120, Console().width)).print(table)
    return 0


@command("check-reply")
def _check_reply(args: argparse.Namespace) -> int:
    from router.core.pipeline import InputError, Router

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
        print("  " + i18n.gettext("{word!r} at {start}-{end} ({source}{tag}): {text!r}{advice}", word=hit.word, start=hit.start,
                                  end=hit.end, source=hit.source, tag=tag, text=args.text[hit.start:hit.end], advice=advice))
    return 1


#: argparse's own refusals (Python 3.11+ wording), matched back by t() once argparse has formatted them.
ARGPARSE = (
    i18n._("the following arguments are required: {args}"), i18n._("unrecognized arguments: {args}"),
    i18n._("argument {argument}: {message}"), i18n._("invalid choice: {value} (choose from {choices})"),
    i18n._("invalid {type} value: {value}"), i18n._("expected one argument"), i18n._("expected at most one argument"),
    i18n._("expected at least one argument"), i18n._("one of the arguments {args} is required"),
    i18n._("not allowed with argument {argument}"), i18n._("ambiguous option: {option} could match {matches}"),
)


_ARGPARSE_HELP = (("\npositional arguments:\n", i18n._("\npositional arguments:\n")),
                  ("\noptions:\n", i18n._("\noptions:\n")),
                  ("show this help message and exit", i18n._("show this help message and exit")),
                  ("show program's version number and exit", i18n._("show program's version number and exit")))


class Parser(argparse.ArgumentParser):
    """argparse with its refusals and its ``usage:`` in the current language (sub-commands' parsers
    are made of the same class)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, i18n.gettext("{prog}: error: {message}", prog=self.prog, message=i18n.t(message)) + "\n")

    def format_usage(self) -> str:
        return super().format_usage().replace("usage: ", i18n.gettext("usage: "), 1)

    def format_help(self) -> str:
        """argparse's own headings and the -h/--version lines (its words, not ours) translated."""
        text = super().format_help().replace("usage: ", i18n.gettext("usage: "), 1)
        for english, mine in _ARGPARSE_HELP:
            text = text.replace(english, i18n.t(mine))
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fenliu", description=i18n.gettext("Multi-shop message router for e-commerce customer service."))
    parser.add_argument("--version", action="version", version=f"fenliu {__version__}")
    lang_help = i18n.gettext("language of what fenliu prints: zh-CN or en (default: $FENLIU_LANG, else zh-CN)")
    parser.add_argument("--lang", type=_lang, default=None, help=lang_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", default=os.environ.get("FENLIU_CONFIG", "config"), type=Path,
                       help=i18n.gettext("configuration folder (default: ./config or $FENLIU_CONFIG)"))
        p.add_argument("--lang", type=_lang, default=argparse.SUPPRESS, help=lang_help)
        return p

    add("check", i18n.gettext("validate the configuration; exit 1 with one error a line"))
    p = add("route", i18n.gettext("route JSONL messages and events offline; one decision a line on stdout"))
    p.add_argument("file", nargs="?", help=i18n.gettext("JSONL file, or - for standard input (default)"))
    p = add("plugins", i18n.gettext("list plugins, their hooks and where they came from"))
    p.add_argument("--json", action="store_true", help=i18n.gettext("machine-readable output"))
    p = add("check-reply", i18n.gettext("check an agent's reply against the outbound filters"))
    p.add_argument("--shop", required=True, help=i18n.gettext("shop id whose policy applies"))
    p.add_argument("text", help=i18n.gettext("the reply text"))
    _add_extra_commands(sub, add)
    return parser


def _lang(value: str) -> str:
    lang = i18n.normalize(value)
    if lang is None:
        raise argparse.ArgumentTypeError(i18n.gettext("unsupported language {lang!r} (zh-CN or en)", lang=value))
    return lang


def _add_extra_commands(sub: argparse._SubParsersAction, add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Commands whose modules are heavier (server, simulator) register their arguments here."""
    commands.register(add, command)


def _lang_in(argv: Sequence[str]) -> str | None:
    """``--lang X`` or ``--lang=X`` anywhere in ``argv``, before argparse reads it: its refusals of
    the rest of the line are in that language too."""
    for i, arg in enumerate(argv):
        if arg == "--lang" and i + 1 < len(argv):
            return i18n.normalize(argv[i + 1])
        if arg.startswith("--lang="):
            return i18n.normalize(arg.partition("=")[2])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    previous = i18n.set_default(_lang_in(argv))
    try:
        args = build_parser().parse_args(argv)
    except BaseException:
        i18n.set_default(previous)
        raise
    configure_logging(os.environ.get("FENLIU_LOG_LEVEL", "warning"), os.environ.get("FENLIU_LOG_FORMAT", "auto"))  # type: ignore[arg-type]
    i18n.set_default(args.lang)  # --lang: what this command prints, and a server's default language
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        i18n.set_default(previous)
