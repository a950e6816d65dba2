"""Decoding inbound payloads: one message, a JSON array of them, or JSONL lines of messages and
events. msgspec validates while it decodes (≈1 µs for a 300-byte message), and every failure is
turned into a short reason a user can act on, without a traceback."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, get_args

import msgspec

from router.core.i18n import _, json_reason, validation_reason
from router.core.models import AgentStatus, Event, Kind, Message

_CHOICES = {"kind": get_args(Kind), "status": get_args(AgentStatus)}

_message = msgspec.json.Decoder(Message)
_event = msgspec.json.Decoder(Event)
_batch = msgspec.json.Decoder(list[msgspec.Raw])
_TYPE = b'"type"'

#: The reason for JSON nested past msgspec's recursion guard (about Python's recursion limit,
#: 1000 levels); no message, event or platform push of ours is more than a few levels deep.
TOO_DEEP = _("JSON nested too deep (more than about 1000 levels)")


def explain(exc: BaseException) -> str:
    """A one-line reason for a decode or validation error (or the :class:`RecursionError` msgspec
    raises for absurdly nested JSON): a :class:`router.core.i18n.Text`, English as ``str``, translated
    where it is shown (msgspec's message shapes are catalogue entries, router/core/i18n.py)."""
    if isinstance(exc, RecursionError):
        return TOO_DEEP
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        reason, sep, where = text.rpartition(" - at `")
        if not sep:
            reason, where = text, ""
        path = where.rstrip("`").removeprefix("$").removeprefix(".")
        plain = reason.replace("`", "")
        if plain.startswith("Object missing required field "):
            return _("missing required field {field!r}", field=(path + "." if path else "") + plain.rsplit(" ", 1)[1])
        if plain.startswith("Object contains unknown field "):
            return _("unknown field {field!r}", field=(path + "." if path else "") + plain.rsplit(" ", 1)[1])
        if plain.startswith("Invalid enum value") and path in _CHOICES:
            return _("{path}: expected one of {choices}; got {got}", path=path, choices=", ".join(_CHOICES[path]),
                     got=plain.removeprefix("Invalid enum value "))
        why = validation_reason(reason)
        return _("{path}: {reason}", path=path, reason=why) if path else why
    if isinstance(exc, msgspec.DecodeError):
        return json_reason(text)
    return text


def decode_line(line: bytes) -> Message | Event:
    """A JSONL line: an event when it has a ``type``, else a message. (``find``, not ``in``:
    ``bytes.__contains__`` first tries its operand as an integer and builds and drops a
    ``TypeError`` for every line, ≈ 0.1 µs.)"""
    if line.find(_TYPE) >= 0:
        try:
            return _event.decode(line)
        except msgspec.ValidationError as exc:
            if "type" in str(exc) and "missing" not in str(exc).lower() and "Invalid value" in str(exc):
                raise msgspec.ValidationError(
                    "unknown event type (expected agent_status, close, transfer, accept, tick or rating)"
                ) from None
            if "Object missing required field `type`" not in str(exc):
                raise
    return _message.decode(line)


def decode_message(data: bytes) -> Message:
    """A typed decode: unknown fields are refused before their values are read, so nesting
    cannot recurse here; the ``RecursionError`` guard is for safety, and costs nothing until raised."""
    try:
        return _message.decode(data)
    except RecursionError:
        raise msgspec.ValidationError(TOO_DEEP) from None


def split_batch(body: bytes) -> list[msgspec.Raw] | list[bytes]:
    """One message or a JSON array of them, as raw items validated one by one later, so one bad
    item does not sink the others. An array whose items msgspec cannot even skip (nested past its
    recursion guard) is split by :func:`split_array` instead, and the deep item alone is refused."""
    if body.lstrip()[:1] != b"[":
        return [body]
    try:
        return _batch.decode(body)
    except RecursionError:
        return split_array(body)


# A JSON string (escapes included), or a run of brackets; everything else lies inside an item.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[{]+|[\]}]+|,', re.S)


def split_array(body: bytes) -> list[bytes]:
    """The top-level items of a JSON array as raw slices, without recursion: only bracket depth
    and strings are tracked, each item's own JSON is checked when it is decoded. Called only when
    msgspec gave up on the array, so the ordinary batch pays nothing for it."""
    depth, start, items = 0, 0, []
    for m in _TOKENS.finditer(body):
        tok = m.group()
        first = tok[:1]
        if first == b'"':
            continue
        if first in b"[{":
            if depth == 0:
                if first != b"[" or body[:m.start()].strip():
                    break
                start = m.start() + 1
            depth += len(tok)
        elif first == b",":
            if depth == 1:
                items.append(body[start:m.start()])
                start = m.end()
        else:
            if len(tok) >= depth:  # this run closes the array
                end = m.start() + depth - 1
                if len(tok) > depth or body[end + 1:].strip():
                    break
                if items or body[start:end].strip():  # not ``[]``
                    items.append(body[start:end])
                return items
            depth -= len(tok)
    raise msgspec.DecodeError("JSON is malformed: not one complete array")


class Batch(msgspec.Struct):
    """A body's messages after validation: the good ones with their index in the body (a reply
    names items by it), and one ``{"index", "reason"[, "msg_id"]}`` per refused item."""

    messages: list[Message] = msgspec.field(default_factory=list)
    index: list[int] = msgspec.field(default_factory=list)
    errors: list[dict[str, Any]] = msgspec.field(default_factory=list)


def decode_batch(items: Iterable[msgspec.Raw | bytes], shop_id: str) -> Batch:
    """Each raw item decoded on its own; a bad one (malformed, invalid, nested too deep, another
    shop's) is named by its index and the rest go through."""
    batch = Batch()
    for i, raw in enumerate(items):
        try:
            msg = decode_message(raw)  # type: ignore[arg-type]
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            batch.errors.append({"index": i, "reason": explain(exc)})
            continue
        if msg.shop_id != shop_id:
            batch.errors.append({"index": i, "msg_id": msg.msg_id,
                                 "reason": f"shop_id {msg.shop_id!r} does not match the URL's shop {shop_id!r}"})
            continue
        batch.messages.append(msg)
        batch.index.append(i)
    return batch


def read_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, Message | Event | None, str | None]]:
    """JSONL input as ``(line number, item, None)`` or ``(line number, None, reason)``; blank
    lines and ``#`` comments are skipped. ``route``, ``simulate`` and the replay adapter all read
    through this, so they accept and reject exactly the same lines."""
    message = _message.decode
    n = 0
    for raw in lines:
        n += 1
        line = raw.strip()
        if not line or line[0] == 35:  # b"#"
            continue
        try:
            # decode_line, with its usual case (a message: no ``"type"``) inline
            yield n, message(line) if line.find(_TYPE) < 0 else decode_line(line), None
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            yield n, None, explain(exc)
