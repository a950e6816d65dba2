"""``fenliu route``: JSONL in, one decision a line out, no server and no storage.

The clock is each line's ``ts``; all agents start online. Output depends only on the input and
the configuration, so the same input gives byte-identical output.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO, TextIO

import msgspec

from router.config import Config
from router.ingest import decode_line, explain
from router.models import Message
from router.pipeline import InputError, Router

_encode = msgspec.json.Encoder().encode


async def route_lines(router: Router, lines: Iterable[bytes], out: BinaryIO, err: TextIO) -> int:
    """Route every line; report bad ones as ``line N: reason`` on ``err``. Returns the number of
    bad lines."""
    bad = 0
    write = out.write
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        try:
            item = decode_line(line)
            if isinstance(item, Message):
                decisions = await router.handle_message(item)
            else:
                decisions = await router.handle_event(item)
        except (msgspec.DecodeError, msgspec.ValidationError, InputError) as exc:
            bad += 1
            err.write(f"line {n}: {explain(exc)}\n")
            continue
        for d in decisions:
            write(_encode(d))
            write(b"\n")
    return bad


def make_router(config: Config) -> Router:
    return Router(config)
