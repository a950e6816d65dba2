"""The bodies ``fenliu serve`` takes and answers with, as msgspec structs, so the published
OpenAPI document (router/service/openapi.py) is generated from types rather than written by
hand, and so a handler can encode one of these instead of a dict. They live here, not beside
their handlers, so that the document and the handlers import them without importing each other.
Messages, events and WebSocket frames are in router/core/models.py.

Response structs forbid unknown fields: the document then says ``additionalProperties: false``
and the schemathesis test (tests/web/test_openapi.py) fails when a handler grows a key the
contract does not name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from router.core.models import (
    AgentStatus,
    Buyer,
    BuyerOrder,
    ConversationState,
    Decision,
    Hit,
    OpenAfterSale,
    Order,
    WsHistoryItem,
)
from router.storage.stats import Stats

UNSET = msgspec.UNSET
Unset = msgspec.UnsetType


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    pass


# -- errors ------------------------------------------------------------------------------------


class Error(_Body):
    """Every refusal: ``error`` is a stable machine code (``bad_request``, ``unauthorized``,
    ``forbidden``, ``not_found``, ``too_large``, ``invalid``, ``too_many_requests``,
    ``unavailable``, … or a finer one a handler names); ``message`` is the reason for a person."""

    error: str
    message: str
    path: str | Unset = UNSET


class ItemError(_Body):
    """Why one item of an ingest batch was refused (``index`` into the batch)."""

    index: int
    reason: str
    msg_id: str | Unset = UNSET


class IngestRejected(_Body):
    """Some items were refused (``error: invalid_items``); the others were taken and are listed."""

    error: Literal["invalid_items"]
    message: str
    errors: list[ItemError]
    accepted: int
    duplicates: int
    accepted_ids: list[str]
    duplicate_ids: list[str]
    response: Any = UNSET  # a webhook's answer for the platform (a PMC ack), when it has one


class Overloaded(_Body):
    """The ingest queue is full (``error: overloaded``): retry after ``Retry-After`` seconds."""

    error: str
    message: str
    queue_max: int | Unset = UNSET


class ConfigRejected(_Body):
    """A reload found mistakes (``error: config_rejected``) or was refused by a guard
    (``error: config_refused``); the running configuration is kept."""

    error: str
    message: str
    errors: list[str]


# -- ingest and bridges ----------------------------------------------------------------------------


class IngestAccepted(_Body):
    """Messages taken (journaled); ``duplicates`` were seen before and are not routed twice."""

    accepted: int
    duplicates: int


class RatingAccepted(_Body):
    accepted: Literal[1]


# -- accounts ------------------------------------------------------------------------------------------


class LoginResponse(_Body):
    """A bearer token for ``Authorization: Bearer <token>``, valid until ``expires`` (epoch s)."""

    token: str
    expires: float
    account: str
    role: Literal["admin", "supervisor", "agent"]
    shops: list[str]
    agent_id: str | None


class TicketResponse(msgspec.Struct):
    ticket: str
    expires: float


class ShopInfo(_Body):
    id: str
    name: str
    platform: str


class MeAgent(_Body):
    id: str
    name: str
    skills: list[str]
    max_concurrent: int
    shops: list[str]


class Me(_Body):
    """Who the token belongs to, the agent it works as and the server's clock."""

    account: str
    role: Literal["admin", "supervisor", "agent"]
    shops: list[ShopInfo]
    agent_id: str | None
    agent: MeAgent | None
    skills: list[str]
    server_time: float
    reply_window_s: float


# -- conversations, agents, profiles ----------------------------------------------------------------


class ConversationSummary(_Body):
    id: str
    shop_id: str
    buyer_id: str
    state: ConversationState
    agent_id: str | None
    skill: str | None
    priority: int
    opened_at: float
    queued_at: float | None
    reserved_until: float | None
    messages: int
    last_ts: float


class ConversationList(_Body):
    conversations: list[ConversationSummary]


class ConversationDetail(ConversationSummary, kw_only=True):
    """An open conversation with its history and what is known of the buyer and order."""

    history: list[WsHistoryItem]
    buyer: Buyer | None
    order: Order | None


class _Agent(_Body):
    """What every view of an agent shows (the team list and the dashboard add their own)."""

    id: str
    name: str
    skills: list[str]
    shops: list[str]
    status: AgentStatus
    in_shift: bool
    load: int
    max_concurrent: int
    connected: bool


class AgentSummary(_Agent):
    conversations: list[str]
    other_conversations: int = 0  # the agent's conversations of shops this account may not see


class AgentList(_Body):
    agents: list[AgentSummary]


class AgentStatusChanged(_Body):
    """The new status and the decisions it caused (conversations moved off an offline agent)."""

    agent_id: str
    status: AgentStatus
    moved: list[Decision]


class Note(_Body):
    text: str
    by: str
    ts: float


class Profile(_Body):
    """What the shop's agents noted about a buyer (客户标签, 备注) and the buyer's last order."""

    shop_id: str
    buyer_id: str
    tags: list[str]
    notes: list[Note]
    order: Order | None | Unset = UNSET
    orders: list[BuyerOrder] | Unset = UNSET  # the buyer's story (GET): orders, scans, after-sale requests


class AfterSales(_Body):
    """Open after-sale requests (售后) of the account's shops, the most recently changed first."""

    aftersales: list[OpenAfterSale]


class Transferred(_Body):
    conversation_id: str
    moved: list[Decision]


# -- the outbound check and quick replies ------------------------------------------------------------


class CheckResult(_Body):
    """The outbound filter's verdict without sending: ``text`` as it would be sent, ``hits``
    the forbidden words with their positions for highlighting."""

    ok: bool
    text: str
    reason: str | None
    hits: list[Hit]
    flags: list[str]


class QuickReply(_Body):
    id: str
    title: str
    keywords: list[str]
    template: str
    text: str


class QuickReplyGroup(_Body):
    group: str
    items: list[QuickReply]


class QuickReplies(_Body):
    """The shop's 话术库 with placeholders filled; ``suggested`` are ids whose keyword is in ``q``."""

    shop_id: str
    conversation_id: str | None
    groups: list[QuickReplyGroup]
    suggested: list[str]


# -- figures ---------------------------------------------------------------------------------------------


class Figures(_Body):
    """Today's counts; ``reply_rate`` is the share answered within the reply window."""

    messages: int
    conversations: int
    replies: int
    answered: int
    in_time: int
    missed: int
    pending: int
    reply_rate: float | None
    avg_response_s: float | None
    first_response_s: float | None
    ratings: int
    rating_avg: float | None
    satisfaction_rate: float | None
    transfers: int


class HourFigures(_Body):
    hour: int
    messages: int
    in_time: int
    judged: int


class TeamToday(Figures, kw_only=True):
    """A supervisor's today: the shops' totals, per hour and per agent."""

    day: str
    updated: float
    reply_window_s: float
    hours: list[HourFigures]
    agents: dict[str, Figures]
    #: Every figure, as ``fenliu stats`` and ``/v1/stats`` give them for the day (router/storage/figures.py).
    stats: Stats


class AgentToday(Figures, kw_only=True):
    """An agent's own today."""

    agent_id: str
    status: AgentStatus
    #: ``false``: outside the agent's shift (排班外), whatever its own status says.
    in_shift: bool
    day: str
    updated: float
    reply_window_s: float
    stats: Stats


class ShopCounts(_Body):
    open: int
    queued: int
    reserved: int
    assigned: int
    agents_online: int


class StatsResponse(_Body):
    """Live counts per permitted shop plus the period's figures; the service-wide counts only
    for an account of all shops, ``invariants`` only for such an admin."""

    shops: dict[str, ShopCounts]
    period: Stats
    ingest_queue: int | Unset = UNSET
    outbox_pending: int | Unset = UNSET
    journal_seq: int | Unset = UNSET
    invariants: str | Unset = UNSET


class ReloadResponse(_Body):
    reloaded: bool
    generation: int
    shops: int
    agents: int
    #: The guards' refusals a forced reload overrode (empty unless forced).
    forced: list[str] = []


class Health(_Body):
    """``status`` is ``ok`` (200) or ``starting``/``failed`` (503, ``reason`` says why);
    ``backend``/``instance``/``shards`` only with the Redis backend."""

    status: Literal["ok", "starting", "failed"]
    reason: str | None
    uptime_s: float
    journal_seq: int
    ingest_queue: int
    connected_agents: int
    backend: str | Unset = UNSET
    instance: str | Unset = UNSET
    shards: list[int] | Unset = UNSET


# -- the supervisors' dashboard and feed --------------------------------------------------------------


class QueueInfo(_Body):
    skill: str
    depth: int
    oldest_wait_s: float
    shops: dict[str, int]


class DashboardAgent(_Agent):
    today: Figures | None
    #: When an agent outside its shift (排班外) comes on next; ``None`` while in shift.
    shift_starts: float | None


class DashboardConversation(_Body):
    id: str
    shop_id: str
    buyer_id: str
    state: ConversationState
    agent_id: str | None
    skill: str | None
    priority: int
    opened_at: float
    waiting_since: float | None
    reserved_until: float | None


class Totals(_Body):
    open: int
    queued: int
    reserved: int
    assigned: int
    bot: int
    agents_online: int


class DecisionItem(Decision, kw_only=True, forbid_unknown_fields=True):
    """A committed routing decision and when it committed (``ts``)."""

    ts: float


class FeedDecision(DecisionItem, tag="decision", tag_field="type"):
    """Supervisors' feed: a decision of a permitted shop, as it commits."""


class NextOn(_Body):
    id: str
    name: str
    at: float


class Alerts(_Body):
    """The dashboard's thresholds (``[defaults]``): a wait of ``wait_warn_s`` turns amber,
    ``wait_alert_s`` red (listed under 即将超时, about to miss ``reply_within_s``); a queue of
    ``queue_warn`` turns amber, ``queue_alarm`` red."""

    wait_warn_s: float
    wait_alert_s: float
    reply_within_s: float
    queue_warn: int
    queue_alarm: int


class Dashboard(_Body, tag="dashboard", tag_field="type"):
    """Queues per skill, agents, open conversations (most waiting first, at most 300), today's
    figures and recent decisions of the account's shops; also pushed on the supervisors' feed
    every two seconds."""

    server_time: float
    totals: Totals
    queues: list[QueueInfo]
    agents: list[DashboardAgent]
    conversations: list[DashboardConversation]
    today: TeamToday
    shops: list[ShopInfo]
    decisions: list[DecisionItem]
    #: Who comes on next: agents outside their shift, the soonest first (at most five).
    next_on: list[NextOn]
    alerts: Alerts


SupervisorFrame = FeedDecision | Dashboard


# -- request bodies ------------------------------------------------------------------------------------


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    # Bounded: a guessed name is remembered for its lockout (router/service/login.py).
    account: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    password: Annotated[str, msgspec.Meta(max_length=1024)]


class StatusRequest(msgspec.Struct, forbid_unknown_fields=True):
    status: AgentStatus


class ProfileRequest(msgspec.Struct, forbid_unknown_fields=True):
    tags: list[str] | None = None
    add_tags: list[str] = []
    note: str | None = None


class ReloadRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/admin/reload``: ``force`` applies a valid configuration the guards refused
    (an emptied file, a shop left without agents, an outbound filter turned off)."""

    force: bool = False


class CheckRequest(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    conversation_id: str | None = None
    shop_id: str | None = None


class TransferRequest(msgspec.Struct, forbid_unknown_fields=True):
    to_agent: str | None = None
    to_skill: str | None = None
