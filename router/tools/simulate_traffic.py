"""The buyers a simulation meets, shared by every policy compared: synthetic conversations from
the scenario, or recorded JSONL cut into the conversations the buyers had."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from router.core import i18n
from router.core.config import Config
from router.tools.scenario import ConvSpec, Scenario, classify_need, generate



class Traffic(msgspec.Struct, frozen=True):
    """What the buyers do, shared by every policy of a run: conversations (synthetic, or recorded
    messages cut into conversations), recorded agent events (``(ts, order, item)``), and the
    horizon ``[start, end]``."""

    start: float
    end: float
    source: str
    conversations: list[ConvSpec] = []
    recorded: list[tuple[float, int, Any]] = []
    synthetic: bool = True


def read_traffic(path: Path) -> tuple[list[tuple[float, int, Any]], list[str]]:
    """Recorded JSONL: messages, ``close`` lines (they end a conversation) and
    ``agent_status``/``tick`` events, in time order. ``transfer`` and ``accept`` lines are
    dropped: the simulated agents make those decisions."""
    from router.core.ingest import read_lines
    from router.core.models import AgentStatusEvent, CloseEvent, Message, TickEvent

    items: list[tuple[float, int, Any]] = []
    errors: list[str] = []
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [], [f"{path}: {exc.strerror}"]
    for n, item, reason in read_lines(data.splitlines()):
        if item is None:
            errors.append(i18n._("{path}: line {n}: {reason}", path=path, n=n, reason=reason))
            continue
        if item.ts is None:  # type: ignore[union-attr]
            errors.append(i18n._("{path}: line {n}: {reason}", path=path, n=n, reason=i18n._("ts: needed to simulate")))
            continue
        if isinstance(item, Message | AgentStatusEvent | TickEvent | CloseEvent):
            items.append((item.ts, n, item))  # type: ignore[arg-type]
    items.sort(key=lambda x: (x[0], x[1]))
    return items, errors


def cut_conversations(recorded: list[tuple[float, int, Any]], scenario: Scenario
                      ) -> tuple[list[ConvSpec], list[tuple[float, int, Any]]]:
    """Recorded messages as the conversations the buyers had: a buyer's messages belong to one
    conversation until a recorded ``close`` or a silence longer than ``buyers.session_gap_s``.
    The simulated agents then close a conversation only after its last recorded message, and a
    buyer who left sends nothing more, so no conversation appears that the traffic never had.
    Returns the conversations and the other events (agent status, ticks)."""
    from router.core.models import CloseEvent, Message

    gap = scenario.buyers.session_gap_s
    vip_tags = tuple(scenario.buyers.vip_tags)
    open_: dict[str, list[Any]] = {}
    done: list[list[Any]] = []
    events: list[tuple[float, int, Any]] = []
    for ts, n, item in recorded:
        if isinstance(item, Message):
            cid = item.conversation_id
            cur = open_.get(cid)
            if cur is not None and ts - cur[-1].ts > gap:
                done.append(cur)
                cur = None
            if cur is None:
                cur = open_[cid] = []
            cur.append(item)
        elif isinstance(item, CloseEvent):
            cur = open_.pop(item.conversation_id, None)
            if cur is not None:
                done.append(cur)
        else:
            events.append((ts, n, item))
    done.extend(open_.values())
    done.sort(key=lambda msgs: (msgs[0].ts, msgs[0].shop_id, msgs[0].buyer_id))
    out = []
    for k, msgs in enumerate(done, 1):
        first = msgs[0]
        buyer = next((m.buyer for m in msgs if m.buyer is not None), None)
        order = next((m.order for m in msgs if m.order is not None), None)
        need = classify_need([m.text for m in msgs], order, buyer, vip_tags)
        out.append(ConvSpec(k, first.shop_id, first.buyer_id, need, tuple(m.ts for m in msgs), (),
                            buyer, order, tuple(msgs)))
    return out, events


def build_traffic(scenario: Scenario, config: Config, seed: int, traffic_file: Path | None) -> tuple[Traffic, list[str]]:
    """The recorded ``traffic_file``'s buyers, or the scenario's drawn with ``seed``; and the
    file's bad lines."""
    if traffic_file is not None:
        recorded, errors = read_traffic(traffic_file)
        if not recorded:
            return Traffic(0.0, 0.0, str(traffic_file)), errors or [f"{traffic_file}: no messages"]
        convs, events = cut_conversations(recorded, scenario)
        return Traffic(recorded[0][0], recorded[-1][0], str(traffic_file), conversations=convs,
                       recorded=events, synthetic=False), errors
    start = scenario.start_ts
    convs = generate(scenario, config, seed)
    return Traffic(start, start + scenario.duration_h * 3600, f"scenario {scenario.name}", conversations=convs), []
