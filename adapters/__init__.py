"""Channel adapters: how messages come in from a shop's channel and how replies go back out.

An adapter class is registered by name; a shop picks one with ``adapter = "..."`` in shops.toml,
and ``POST /v1/webhooks/{platform}/{shop_id}`` picks one by its ``platform`` path segment. The
built-ins are below; a package can add its own through the ``fenliu.adapters`` entry-point group
(name → ``module:Class``), without touching the router.

The contract is small on purpose:

- :meth:`Adapter.send` delivers one reply and returns when the channel acknowledged it; raising
  :class:`DeliveryError` makes the service retry with backoff (the reply stays journaled);
- :meth:`Adapter.delivered` (optional) says whether the platform already holds a reply. It is
  asked only before sending again a reply whose last attempt's outcome is unknown (the sender
  died, or the request timed out after it was written), so a reply reaches the buyer once even
  across a crash; where the platform cannot say, the reply goes out again marked as a
  redelivery (``OutboundReply.redelivery``) with the same id;
- :meth:`Adapter.parse_webhook` maps a platform's own envelope to messages and order context,
  after checking the platform's signature; :class:`WebhookError` becomes a clear HTTP error.
"""

from __future__ import annotations

import datetime
import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from router.core.i18n import _
from router.core.models import AfterSale, LogisticsEvent, Message, Order

if TYPE_CHECKING:
    from router.core.config import Shop

ENTRY_POINT_GROUP = "fenliu.adapters"


class OutboundReply(msgspec.Struct, frozen=True):
    """One agent reply on its way to the buyer (a row of the ``outbox`` table)."""

    id: int
    shop_id: str
    conversation_id: str
    buyer_id: str
    text: str
    ts: float
    agent_id: str | None = None
    #: An earlier attempt may have reached the platform, which could not say: drop it if held.
    redelivery: bool = False


class OrderContext(msgspec.Struct, frozen=True):
    """Order, logistics or refund news from a platform push, attached to the buyer's conversation
    and kept in the buyer's story: ``logistics`` are the parcel scans the push carried,
    ``aftersale`` the after-sale request it changed."""

    shop_id: str
    order: Order
    buyer_id: str | None = None
    event: str = ""
    logistics: tuple[LogisticsEvent, ...] = ()
    aftersale: AfterSale | None = None


#: The platforms' clock: local times without a zone are China Standard Time.
CST = datetime.timezone(datetime.timedelta(hours=8))


def platform_time(value: str | float | None, default: float) -> float:
    """Epoch seconds from a platform's time field: epoch seconds or milliseconds, or
    ``YYYY-MM-DD HH:MM:SS`` in China Standard Time; ``default`` when absent or unreadable (a
    scan with a garbled time is still worth showing)."""
    if value is None or value == "":
        return default
    if isinstance(value, (int, float)):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    try:
        t = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        return default
    return (t if t.tzinfo else t.replace(tzinfo=CST)).timestamp()


class DeliveryError(Exception):
    """A reply could not be delivered now; the service retries with backoff. ``maybe_delivered``:
    the request may have reached the platform (no answer came), so the next attempt asks first."""

    def __init__(self, message: str = "", *, maybe_delivered: bool = False) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


class Delivery(NamedTuple):
    """What one attempt came to: ``error`` is ``None`` when the platform has the reply
    (``confirmed``: it had it already, nothing was sent); ``doubt``: after a failure, whether
    the platform may hold it anyway."""

    error: str | None = None
    doubt: bool = False
    confirmed: bool = False


class WebhookError(Exception):
    """A webhook request that cannot be accepted: ``status`` and a reason for the caller."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class WebhookResult(msgspec.Struct):
    """What a platform push carried, and what to answer the platform.

    A push is often a batch (frames, events, messages): an item that cannot be read goes into
    ``errors`` as ``{"index": <its place in the push>, "reason": ...}`` and the rest still go
    through; the caller then gets 400 naming each bad item (``response`` rides along in that
    body). ``index`` gives each of ``messages`` its place in the push, when not 0, 1, 2, …"""

    messages: list[Message] = msgspec.field(default_factory=list)
    context: list[OrderContext] = msgspec.field(default_factory=list)
    response: Any = None
    errors: list[dict[str, Any]] = msgspec.field(default_factory=list)
    index: list[int] | None = None


class Adapter:
    """Base class. ``service`` is the running :class:`router.service.service.Service` (or ``None`` in
    tools); ``shop`` the shop's config."""

    name = ""

    def __init__(self, shop: Shop, service: Any = None) -> None:
        self.shop = shop
        self.service = service

    async def send(self, reply: OutboundReply) -> None:
        raise DeliveryError(f"adapter {self.name!r} cannot send replies")

    async def delivered(self, reply: OutboundReply) -> bool | None:
        """Whether the platform already holds ``reply`` (asked before a reply whose last attempt
        is in doubt is sent again); ``None``: the platform cannot say."""
        return None

    def parse_webhook(self, headers: Any, body: bytes) -> WebhookResult:
        raise WebhookError(404, _("adapter {name!r} takes no webhooks", name=self.name))

    async def close(self) -> None:
        return None


_BUILTIN = {
    "bridge": "adapters.bridge:BridgeAdapter",
    "simulator": "adapters.simulator:SimulatorAdapter",
    "replay": "adapters.replay:ReplayAdapter",
    "pinduoduo": "adapters.pinduoduo:PinduoduoAdapter",
    "doudian": "adapters.doudian:DoudianAdapter",
}


async def deliver_once(adapter: Adapter | None, item: OutboundReply, *, in_doubt: bool = False) -> Delivery:
    """One attempt to hand a reply to its shop's platform. A reply ``in_doubt`` (an earlier
    attempt may have reached the platform) is first looked up and not sent again if the platform
    holds it. Any exception counts as a failed attempt (an adapter bug must not lose the reply:
    the outbox keeps it and retries with backoff)."""
    try:
        if adapter is None:
            raise DeliveryError(f"no adapter for shop {item.shop_id!r}")
        if in_doubt:
            try:
                held = await adapter.delivered(item)
            except Exception:  # noqa: BLE001 - a lookup that fails is a platform that cannot say
                held = None
            if held:
                return Delivery(confirmed=True)
            in_doubt = held is None
            if in_doubt:
                item = msgspec.structs.replace(item, redelivery=True)
        await adapter.send(item)
    except DeliveryError as exc:
        return Delivery(str(exc) or type(exc).__name__, in_doubt or exc.maybe_delivered)
    except Exception as exc:  # noqa: BLE001 - an adapter bug must not lose the reply
        return Delivery(f"{type(exc).__name__}: {exc}", True)
    return Delivery()


def _load(target: str) -> type[Adapter]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def registry() -> dict[str, str]:
    """Adapter name → ``module:Class``: the built-ins plus the ``fenliu.adapters`` entry points."""
    found = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def adapter_class(name: str) -> type[Adapter] | None:
    target = registry().get(name)
    return _load(target) if target else None
