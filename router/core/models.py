"""The data that flows through Fenliu, defined once.

Wire shapes (messages, events, decisions) are frozen ``msgspec.Struct``s so decoding validates
them and names the bad field, and so plugins cannot change a message behind the router's back:
an enrichment hook returns a new message instead (``msgspec.structs.replace``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]

Kind = Literal["text", "image", "voice", "video", "goods_card", "order_card", "system"]
Action = Literal["answered", "assigned", "queued", "blocked", "duplicate"]
Cause = Literal[
    "message", "queue_drain", "expansion", "agent_offline", "transfer", "reservation_timeout"
]
AgentStatus = Literal["online", "break", "offline"]


class Buyer(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """What the shop knows of the buyer (客户信息); adapters and plugins enrich it."""

    nick: str | None = None
    tags: tuple[str, ...] = ()
    level: int = 0
    lifetime_spend: float = 0.0


class Order(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """The order a message is about, when the channel tells us."""

    order_id: str | None = None
    status: str | None = None
    amount: float = 0.0
    goods: str | None = None
    courier: str | None = None       # 快递公司, once shipped
    tracking_no: str | None = None   # 运单号


class LogisticsEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """One scan of an order's parcel (物流轨迹), as the platform pushed it: what the buyer asks
    "我的快递到哪了" about, shown beside the chat so the agent need not look it up."""

    ts: float
    text: str
    status: str | None = None  # collected / in_transit / delivering / signed / problem


class AfterSale(msgspec.Struct, frozen=True):
    """A buyer's after-sale request (售后: 仅退款, 退货退款, 换货) on an order and where it stands;
    ``state`` ends in ``refunded``, ``closed`` or ``refused`` (then it is no longer open)."""

    aftersale_id: str
    state: str
    kind: str = "refund"  # refund (仅退款) | return (退货退款) | exchange (换货)
    amount: float = 0.0
    reason: str | None = None
    opened: float | None = None
    updated: float | None = None


class BuyerOrder(msgspec.Struct, frozen=True):
    """One order of the buyer's story (the buyer panel): the order as last known, its latest
    logistics events (newest first) and its after-sale requests (newest first)."""

    shop_id: str
    order: Order
    updated: float
    logistics: tuple[LogisticsEvent, ...] = ()
    aftersales: tuple[AfterSale, ...] = ()


class OpenAfterSale(msgspec.Struct, frozen=True):
    """An open after-sale request in the 售后 list: whose it is, the order, and the buyer's open
    conversation (``conversation_state`` ``None`` when the buyer has none open now)."""

    shop_id: str
    buyer_id: str | None
    conversation_id: str | None
    aftersale: AfterSale
    order: Order
    conversation_state: str | None = None
    agent_id: str | None = None


class Message(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """One inbound buyer message, normalised from any channel."""

    shop_id: NonEmpty
    msg_id: NonEmpty
    buyer_id: NonEmpty
    text: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    kind: Kind = "text"
    ts: float | None = None
    buyer: Buyer | None = None
    order: Order | None = None

    @property
    def conversation_id(self) -> str:
        return f"{self.shop_id}:{self.buyer_id}"


class Decision(msgspec.Struct):
    """What the router did with a message, or with a conversation an event moved.

    Field order is the wire order of ``fenliu route`` output and must stay stable.
    """

    msg_id: str | None
    shop_id: str
    conversation_id: str
    action: Action
    agent_id: str | None = None
    skill: str | None = None
    priority: int = 0
    reply: str | None = None
    text: str | None = None
    flags: list[str] = msgspec.field(default_factory=list)
    cause: Cause = "message"


class FilterVerdict(msgspec.Struct, frozen=True):
    """A filter hook's answer about one text (inbound or outbound).

    ``action``: ``flag`` delivers and records ``flags``; ``mask`` delivers ``text`` (the masked
    version); ``block`` stops delivery with ``reason``. ``hits`` are the findings with positions
    in the original text, for the workbench to highlight.
    """

    action: Literal["flag", "mask", "block"]
    text: str | None = None
    flags: tuple[str, ...] = ()
    reason: str | None = None
    hits: tuple[Hit, ...] = ()


class Hit(msgspec.Struct, frozen=True):
    """One forbidden word found: ``word`` as listed, ``[start, end)`` in the original text,
    ``source`` the word list (or pattern) that matched, ``tag`` its category (引流, 广告法 …,
    what quality inspection counts) and ``advice`` a compliant alternative the workbench offers."""

    word: str
    start: int
    end: int
    source: str = ""
    tag: str = ""
    advice: str = ""


class BotReply(msgspec.Struct, frozen=True):
    """The bot's answer. ``handoff=False`` settles the message (``answered``); ``True`` sends the
    reply and still routes the conversation to a human (a welcome, or "转人工中")."""

    text: str
    handoff: bool = False
    kind: str = "faq"


class Reply(msgspec.Struct, frozen=True):
    """An agent's outbound reply, before it passes the outbound filter."""

    shop_id: str
    conversation_id: str
    text: str
    agent_id: str | None = None


class OutboundResult(msgspec.Struct, frozen=True):
    """The outcome of the outbound check: ``ok`` with the text to send, or refused with hits."""

    ok: bool
    text: str
    hits: tuple[Hit, ...] = ()
    flags: tuple[str, ...] = ()
    reason: str | None = None


class AgentStatusEvent(msgspec.Struct, frozen=True, tag="agent_status", tag_field="type",
                       forbid_unknown_fields=True):
    agent_id: NonEmpty
    status: AgentStatus
    ts: float | None = None


class CloseEvent(msgspec.Struct, frozen=True, tag="close", tag_field="type",
                 forbid_unknown_fields=True):
    conversation_id: NonEmpty
    ts: float | None = None


class TransferEvent(msgspec.Struct, frozen=True, tag="transfer", tag_field="type",
                    forbid_unknown_fields=True):
    conversation_id: NonEmpty
    to_agent: str | None = None
    to_skill: str | None = None
    ts: float | None = None

    def __post_init__(self) -> None:
        if (self.to_agent is None) == (self.to_skill is None):
            raise ValueError("give exactly one of to_agent or to_skill")


class AcceptEvent(msgspec.Struct, frozen=True, tag="accept", tag_field="type",
                  forbid_unknown_fields=True):
    """An agent accepts a reserved conversation (``serve``; ``route`` auto-accepts)."""

    conversation_id: NonEmpty
    agent_id: NonEmpty
    ts: float | None = None


class TickEvent(msgspec.Struct, frozen=True, tag="tick", tag_field="type",
                forbid_unknown_fields=True):
    ts: float


class RatingEvent(msgspec.Struct, frozen=True, tag="rating", tag_field="type",
                  forbid_unknown_fields=True):
    """A buyer's satisfaction rating (满意度评价) of a conversation, 1 (bad) to 5 (very good).
    It moves nothing; it is journaled for ``fenliu stats``."""

    conversation_id: NonEmpty
    score: Annotated[int, msgspec.Meta(ge=1, le=5)]
    comment: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    ts: float | None = None


Event = AgentStatusEvent | CloseEvent | TransferEvent | AcceptEvent | TickEvent | RatingEvent


class AgentState(msgspec.Struct):
    """An agent's live routing state (the config's :class:`router.core.config.Agent` says who they are).

    ``load`` counts open conversations (assigned or reserved) across all shops; ``last_seq`` is
    the router-wide sequence number of their last assignment (round-robin order); ``version``
    changes whenever anything a strategy key or availability depends on changes.
    ``shared_load`` counts the agent's open conversations held by *other* routers (several
    instances sharing one Redis, kept current by their announcements); always 0 with one
    instance. Availability and ``least_load`` use the sum, the agent's global load.
    """

    id: str
    max_concurrent: int = 5
    weight: int = 100
    status: AgentStatus = "online"
    in_shift: bool = True
    load: int = 0
    assigned: int = 0
    last_seq: int = 0
    version: int = 0
    conversations: dict[str, None] = msgspec.field(default_factory=dict)
    shared_load: int = 0

    @property
    def available(self) -> bool:
        return self.status == "online" and self.in_shift and self.load + self.shared_load < self.max_concurrent


ConversationState = Literal["bot", "queued", "reserved", "assigned"]


class Conversation(msgspec.Struct):
    """One buyer's open conversation at one shop, from first message to close."""

    id: str
    shop_id: str
    buyer_id: str
    opened_at: float
    state: ConversationState = "bot"
    agent_id: str | None = None
    skill: str | None = None
    priority: int = 0
    buyer_tags: tuple[str, ...] = ()
    queued_at: float | None = None
    target: int = 0
    target_since: float = 0.0
    version: int = 0
    seq: int = 0
    reserved_until: float | None = None
    messages: int = 0
    last_ts: float = 0.0
    history: list[dict[str, object]] = msgspec.field(default_factory=list)
    meta: dict[str, object] = msgspec.field(default_factory=dict)


# -- agent WebSocket protocol (``GET /v1/agents/ws``) ---------------------------------------------
# Every frame is one JSON object with a ``type``. ``ref`` is the client's own id for a request;
# the server's ``result`` frame echoes it.


class WsAccept(msgspec.Struct, frozen=True, tag="accept", tag_field="type", forbid_unknown_fields=True):
    """Take a reserved conversation before ``accept_timeout_s`` runs out."""

    conversation_id: NonEmpty
    ref: str | None = None


class WsReply(msgspec.Struct, frozen=True, tag="reply", tag_field="type", forbid_unknown_fields=True):
    """Answer the buyer; checked by the outbound filters before it is sent."""

    conversation_id: NonEmpty
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=10_000)]
    ref: str | None = None


class WsTransfer(msgspec.Struct, frozen=True, tag="transfer", tag_field="type", forbid_unknown_fields=True):
    """Hand the conversation to another agent or skill group (转接)."""

    conversation_id: NonEmpty
    to_agent: str | None = None
    to_skill: str | None = None
    ref: str | None = None

    def __post_init__(self) -> None:
        if (self.to_agent is None) == (self.to_skill is None):
            raise ValueError("give exactly one of to_agent or to_skill")


class WsClose(msgspec.Struct, frozen=True, tag="close", tag_field="type", forbid_unknown_fields=True):
    conversation_id: NonEmpty
    ref: str | None = None


class WsStatus(msgspec.Struct, frozen=True, tag="status", tag_field="type", forbid_unknown_fields=True):
    """在线 / 小休 / 离线."""

    status: AgentStatus
    ref: str | None = None


class WsNote(msgspec.Struct, frozen=True, tag="note", tag_field="type", forbid_unknown_fields=True):
    """An internal note (备注) on the conversation's buyer, optionally with tags (客户标签);
    never sent to the buyer."""

    conversation_id: NonEmpty
    text: Annotated[str, msgspec.Meta(max_length=2_000)] = ""
    tags: tuple[Annotated[str, msgspec.Meta(min_length=1, max_length=64)], ...] = ()
    ref: str | None = None


WsClientFrame = WsAccept | WsReply | WsTransfer | WsClose | WsStatus | WsNote


class WsHistoryItem(msgspec.Struct, omit_defaults=True):
    """One line of a conversation's history: the buyer's message, a reply or a bot answer."""

    who: Literal["buyer", "agent", "bot"]
    text: str
    ts: float
    msg_id: str | None = None
    agent_id: str | None = None
    kind: str = "text"


class WsAssigned(msgspec.Struct, tag="assigned", tag_field="type", omit_defaults=True):
    """A conversation is now this agent's (reserved until ``reserved_until`` unless accepted)."""

    conversation_id: str
    shop_id: str
    buyer_id: str
    state: str
    skill: str | None = None
    priority: int = 0
    cause: str = "message"
    reserved_until: float | None = None
    buyer: Buyer | None = None
    order: Order | None = None
    history: list[WsHistoryItem] = msgspec.field(default_factory=list)


class WsMessage(msgspec.Struct, tag="message", tag_field="type", omit_defaults=True):
    """A new buyer message in one of the agent's conversations (``text`` as masked)."""

    conversation_id: str
    msg_id: str
    text: str
    ts: float
    kind: str = "text"
    flags: list[str] = msgspec.field(default_factory=list)


class WsTransferred(msgspec.Struct, tag="transferred", tag_field="type", omit_defaults=True):
    """The conversation left this agent (transfer, reservation timeout, offline)."""

    conversation_id: str
    cause: str
    to_agent: str | None = None


class WsClosed(msgspec.Struct, tag="closed", tag_field="type", omit_defaults=True):
    conversation_id: str


class WsContext(msgspec.Struct, tag="context", tag_field="type", omit_defaults=True):
    """New order or refund information about the buyer of an open conversation."""

    conversation_id: str
    order: Order


class WsHello(msgspec.Struct, tag="hello", tag_field="type", omit_defaults=True):
    """First frame after connecting: who you are and what you hold (after a reconnect too)."""

    agent_id: str
    status: str
    conversations: list[WsAssigned] = msgspec.field(default_factory=list)


class WsResult(msgspec.Struct, tag="result", tag_field="type", omit_defaults=True):
    """The answer to a client frame: ``ok``, or the reason (and forbidden words) it was refused."""

    op: str
    ok: bool
    ref: str | None = None
    conversation_id: str | None = None
    reason: str | None = None
    text: str | None = None
    hits: tuple[Hit, ...] = ()


WsServerFrame = WsHello | WsAssigned | WsMessage | WsTransferred | WsClosed | WsContext | WsResult


class ServiceSnapshot(msgspec.Struct):
    """The service's per-conversation state in a snapshot of the routing state
    (router/storage/snapshot.py): what agents are shown of each open conversation."""

    history: dict[str, list[WsHistoryItem]]
    context: dict[str, tuple[Buyer | None, Order | None]]
    waiting_since: dict[str, float]
    clock: float
