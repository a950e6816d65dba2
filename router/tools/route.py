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
from router.core.models import Message
from router.core.pipeline import InputError, Router

_encode_lines = msgspec.json.Encoder().encode_lines


async def route_lines(router: Router, lines: Iterable[bytes], out: BinaryIO, err: TextIO) -> int:
    """Route every line; report bad ones as ``line N: reason`` on ``err``. Returns the number of
    bad lines."""
    bad = 0
    write = out.write
    for n, item, reason in read_lines(lines):
        try:
            if item is None:
                raise InputError(reason)
            if isinstance(item, Message):
                decisions = await router.handle_message(item)
            else:
                decisions = await router.handle_event(item)
        except InputError as exc:
            bad += 1
            err.write(gettext("line {n}: {reason}", n=n, reason=t(exc)) + "\n")
            continue
        if decisions:
            write(_encode_lines(decisions))
    return bad
