"""``fenliu reload``: ask a running ``fenliu serve`` to reload its configuration, through
``POST /v1/admin/reload`` (so the answer, with every ``file: key.path: reason``, comes back here,
and ``--force`` can override the guards; SIGHUP can do neither)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from router.core import i18n
from router.core.i18n import gettext


def register(add: Callable[[str, str], argparse.ArgumentParser], command: Callable[[str], Any]) -> None:
    p = add("reload", i18n.gettext("make a running server reload its configuration; print what it refused"))
    p.add_argument("--url", default=None,
                   help=i18n.gettext("the server (default: http://server.host:server.port from the configuration)"))
    p.add_argument("--account", default=os.environ.get("FENLIU_ACCOUNT"),
                   help=i18n.gettext("an admin of all shops (default: $FENLIU_ACCOUNT); $FENLIU_TOKEN instead skips the login"))
    p.add_argument("--password-stdin", action="store_true", help=i18n.gettext("read the password from standard input"))
    p.add_argument("--force", action="store_true",
                   help=i18n.gettext("apply a valid configuration even if it empties a file, leaves a shop without agents "
                        "or turns an outbound filter off"))
    command("reload")(reload_command)


def default_url(config_dir: Path) -> str:
    """From ``fenliu.toml``'s ``[server]``, read leniently: the file may be the broken one."""
    from router.core.config import ServerConfig, _read_toml

    host, port = "127.0.0.1", 8080
    raw = _read_toml(config_dir / "fenliu.toml", [], required=False) or {}
    server = raw.get("server")
    if isinstance(server, dict):
        default = ServerConfig()
        host = server.get("host") if isinstance(server.get("host"), str) else default.host
        port = server.get("port") if isinstance(server.get("port"), int) else default.port
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _post(url: str, body: dict[str, Any], token: str | None = None) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json", "Accept-Language": i18n.current().replace("_", "-")}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as r:  # noqa: S310 - the operator's own server
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"message": exc.reason}


def reload_command(args: argparse.Namespace) -> int:
    import urllib.error

    base = (args.url or default_url(args.config)).rstrip("/")
    try:
        token = os.environ.get("FENLIU_TOKEN")
        if not token:
            if not args.account:
                print(gettext("error: name an admin account (--account or $FENLIU_ACCOUNT), or set $FENLIU_TOKEN"),
                      file=sys.stderr)
                return 1
            password = (sys.stdin.readline().rstrip("\r\n") if args.password_stdin
                        else getpass.getpass(gettext("password for {account}: ", account=args.account)))
            status, body = _post(f"{base}/v1/auth/login", {"account": args.account, "password": password})
            if status != 200:
                print(gettext("error: login refused ({status}): {reason}", status=status, reason=body.get("message", body)),
                      file=sys.stderr)
                return 1
            token = body["token"]
        status, body = _post(f"{base}/v1/admin/reload", {"force": bool(args.force)}, token)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(gettext("error: cannot reach {url}: {reason}", url=base, reason=reason), file=sys.stderr)
        return 1
    if status == 200:
        for line in body.get("forced", []):
            print(gettext("forced: {line}", line=line), file=sys.stderr)
        print(gettext("reloaded: generation {generation} ({shops} shops, {agents} agents)", generation=body.get("generation"),
                      shops=body.get("shops"), agents=body.get("agents")))
        return 0
    for line in body.get("errors", []):
        print(line, file=sys.stderr)
    if body.get("error") == "config_refused":
        print(gettext("refused: the running configuration is kept; fix the files, or run again with --force "
                      "to apply this one anyway"), file=sys.stderr)
    else:
        print(gettext("error ({status}): {reason}", status=status, reason=body.get("message", body)), file=sys.stderr)
    return 1
