"""The ``replay`` adapter: feed a JSONL file of recorded messages to a running server, signed
like a bridge, optionally at the recorded pace. ``python -m adapters.replay FILE --url URL``.

Lines are messages (the ``route`` input format; event lines with a ``type`` are skipped, since
agents' events come from agents). Bad lines are reported as ``line N: reason`` and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from adapters import Adapter
from router.core.ingest import read_lines
from router.core.models import Message


class ReplayAdapter(Adapter):
    """Replies of a replayed shop go nowhere; they are acknowledged so the outbox stays empty."""

    name = "replay"

    async def send(self, reply: Any) -> None:
        return None


def read_messages(lines: Iterable[bytes], errors: list[str] | None = None) -> Iterator[Message]:
    for n, item, reason in read_lines(lines):
        if reason is not None and errors is not None:
            errors.append(f"line {n}: {reason}")
        if isinstance(item, Message):
            yield item


async def replay(url: str, messages: Iterable[Message], secrets: dict[str, bytes], *, pace: float = 0.0,
                 batch: int = 1) -> dict[str, int]:
    """POST the messages (in batches of ``batch`` per shop) and count the answers by status.
    ``pace`` > 0 sleeps the recorded gap between messages divided by ``pace``."""
    import aiohttp

    from router.core.signing import SIGNATURE_HEADER, sign

    counts: dict[str, int] = {}
    last_ts: float | None = None
    pending: list[Message] = []
    async with aiohttp.ClientSession() as http:
        async def flush() -> None:
            if not pending:
                return
            shop = pending[0].shop_id
            body = msgspec.json.encode(pending if len(pending) > 1 else pending[0])
            secret = secrets.get(shop, b"")
            async with http.post(f"{url}/v1/shops/{shop}/messages", data=body,
                                 headers={SIGNATURE_HEADER: sign(secret, body), "Content-Type": "application/json"}) as r:
                await r.read()
                counts[str(r.status)] = counts.get(str(r.status), 0) + len(pending)
            pending.clear()

        for msg in messages:
            if pace > 0 and msg.ts is not None:
                if last_ts is not None and msg.ts > last_ts:
                    await asyncio.sleep((msg.ts - last_ts) / pace)
                last_ts = msg.ts
            if pending and (pending[0].shop_id != msg.shop_id or len(pending) >= batch):
                await flush()
            pending.append(msg)
        await flush()
    return counts


def main(argv: list[str] | None = None) -> int:
    from router.core.config import ConfigErrors, load_config

    p = argparse.ArgumentParser(prog="python -m adapters.replay", description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="JSONL file, or - for standard input")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--config", default=os.environ.get("FENLIU_CONFIG", "config"), help="for the shops' secrets")
    p.add_argument("--pace", type=float, default=0.0, help="replay speed-up over the recorded ts (0: as fast as possible)")
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigErrors as exc:
        print(exc, file=sys.stderr)
        return 1
    secrets = {sid: s.secret for sid, s in config.shops.items() if s.secret}
    errors: list[str] = []
    source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    with source:
        counts = asyncio.run(replay(args.url, read_messages(source, errors), secrets, pace=args.pace, batch=args.batch))
    for e in errors:
        print(e, file=sys.stderr)
    print(" ".join(f"{k}:{v}" for k, v in sorted(counts.items())))
    return 1 if errors or any(k != "202" for k in counts) else 0


if __name__ == "__main__":
    raise SystemExit(main())
