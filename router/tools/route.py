"""``fenliu route``: JSONL in, one decision a line out, no server and no storage.

The clock is each line's ``ts``; all agents start online. Output depends only on the input and
the configuration, so the same input gives byte-identical output.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO, TextIO

import msgspec

from router.core.i18n import gettext, t
from router.core.ingest import read_lines
from router.core.models import Decision, Message
from router.core.pipeline import InputError, Router

_encode_lines = msgspec.json.Encoder().encode_lines
#: Decisions encoded and written at once: one encoder call and one write per batch instead of
#: per message. ``out`` is a buffered stream anyway, so nobody saw them sooner before.
BATCH = 128


async def route_lines(router: Router, lines: Iterable[bytes], out: BinaryIO, err: TextIO) -> int:
    """Route every line; report bad ones as ``line N: reason`` on ``err``. Returns the number of
    bad lines."""
    bad = 0
    write = out.write
    handle_message, handle_event = router.handle_message, router.handle_event
    route_plain, apply_plain = router.route_plain, router.apply_plain
    pending: list[Decision] = []
    try:
        for n, item, reason in read_lines(lines):
            try:
                if item is None:
                    raise InputError(reason)
                # no hook to await (see Router.plain, Router.quiet): no coroutine per line
                if type(item) is Message:  # read_lines decodes to exactly these types
                    decisions = route_plain(item) if router.plain else await handle_message(item)
                else:
                    decisions = apply_plain(item) if router.quiet else await handle_event(item)
            except InputError as exc:
                bad += 1
                err.write(gettext("line {n}: {reason}", n=n, reason=t(exc)) + "\n")
                continue
            if decisions:
                pending += decisions
                if len(pending) >= BATCH:
                    done, pending = pending, []
                    write(_encode_lines(done))
    finally:
        if pending:
            write(_encode_lines(pending))
    return bad
