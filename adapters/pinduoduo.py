"""Pinduoduo PMC (消息服务) frames → order and refund context for conversations.

PMC is a WebSocket the platform pushes JSON frames on::

    {"commandType": "Common", "id": 7311, "time": 1763880000123, "sendTime": 1763880000456,
     "message": {"type": "pdd_refund_RefundCreated", "mallID": 1001,
                 "content": "{\\"tid\\":\\"231123-01\\",\\"refund_id\\":88,\\"refund_fee\\":1990}"}}

``commandType`` is ``Common`` (a message; the client acks its ``id``), ``HeartBeat`` (keep-alive,
sent by the client every 5–10 s), ``Ack`` or ``Fail``. ``content`` is itself a JSON string. PMC
carries order, logistics and refund events, not chats: this adapter turns them into
:class:`adapters.OrderContext` (order status → after-sales routing, shown to the agent; courier,
tracking number and parcel scans; the after-sale request and its state), matched to a buyer by the
order id the buyer's messages carried, or by ``buyer_id``/``open_id`` when the content has one.
The content fields read (tests/data/adapter_pmc_frames.json records them):

- trade: ``tid``, ``pay_amount`` (分), ``goods_name``; on shipping ``shipping_name`` (快递公司)
  and ``tracking_number``;
- ``pdd_logistics_TraceUpdate``: ``tid``, ``shipping_name``, ``tracking_number`` and ``traces``
  ``[{"time", "desc", "action"}]`` (``action``: GOT 揽收, TRANSPORT 运输, DELIVERING 派件,
  SIGN 签收, FAIL 问题件);
- refund: ``refund_id``, ``refund_fee`` (分), ``after_sales_type`` (1 仅退款, 2 退货退款,
  3 换货), ``refund_reason``.

Two ways in: :class:`PmcClient` keeps the WebSocket itself (heartbeats, acks), or a relay POSTs
frames (one or an array) to ``/v1/webhooks/pinduoduo/{shop_id}``, signed like the bridge
(``X-Fenliu-Signature``), and gets the ack frames back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated, Any, Literal

import msgspec
import structlog

from adapters import Adapter, OrderContext, WebhookError, WebhookResult, platform_time
from adapters.fields import Fen, Id, Text, When
from router.core.i18n import _
from router.core.ingest import explain
from router.core.models import AfterSale, LogisticsEvent, Order

log = structlog.get_logger("fenliu.pinduoduo")


class PmcMessage(msgspec.Struct):
    type: str
    mallID: int | str | None = None  # noqa: N815 - the platform's field name
    content: str = "{}"


class PmcFrame(msgspec.Struct):
    commandType: Literal["Common", "HeartBeat", "Ack", "Fail"]  # noqa: N815
    id: int | str | None = None
    time: int | None = None
    sendTime: int | None = None  # noqa: N815
    message: PmcMessage | None = None


class PmcTrace(msgspec.Struct):
    """One parcel scan of a ``pdd_logistics_TraceUpdate``."""

    time: When = None
    desc: Text = None
    action: Text = None


class PmcContent(msgspec.Struct):
    """The fields of a message's ``content`` this adapter reads; others are skipped."""

    tid: Id = None
    order_sn: Id = None
    refund_fee: Fen = None
    pay_amount: Fen = None
    buyer_id: Id = None
    open_id: Id = None
    goods_name: Text = None
    shipping_name: Text = None
    tracking_number: Id = None
    traces: Annotated[list[PmcTrace], msgspec.Meta(max_length=500)] = []
    refund_id: Id = None
    after_sales_type: int | None = None
    refund_reason: Text = None


_frame = msgspec.json.Decoder(PmcFrame)
_frames = msgspec.json.Decoder(list[PmcFrame])
_content = msgspec.json.Decoder(PmcContent)

#: PMC message type → the order status the conversation shows (and routing reads).
STATUS = {
    "pdd_trade_TradeConfirmed": "paid",
    "pdd_trade_TradeSellerShip": "shipped",
    "pdd_trade_TradeSuccess": "completed",
    "pdd_trade_TradeLogisticsAddressChanged": "address_changed",
    "pdd_trade_TradeCancelled": "cancelled",
    "pdd_refund_RefundCreated": "refund_requested",
    "pdd_refund_RefundAgreeAgreement": "refund_agreed",
    "pdd_refund_RefundReturnGoods": "return_shipped",
    "pdd_refund_RefundSuccess": "refunded",
    "pdd_refund_RefundClosed": "refund_closed",
    "pdd_refund_RefundRefuseAgreement": "refund_refused",
    "pdd_logistics_TraceUpdate": "",  # scans only: the order's status stays as it was
}

#: Refund message type → the after-sale request's state.
AFTERSALE_STATE = {
    "pdd_refund_RefundCreated": "requested",
    "pdd_refund_RefundAgreeAgreement": "agreed",
    "pdd_refund_RefundRefuseAgreement": "refused",
    "pdd_refund_RefundReturnGoods": "return_shipped",
    "pdd_refund_RefundSuccess": "refunded",
    "pdd_refund_RefundClosed": "closed",
}
AFTERSALE_KIND = {1: "refund", 2: "return", 3: "exchange"}

#: A scan's ``action`` → what the parcel is doing.
TRACE_STATUS = {"GOT": "collected", "TRANSPORT": "in_transit", "ARRIVAL": "in_transit", "DEPARTURE": "in_transit",
                "DELIVERING": "delivering", "SIGN": "signed", "FAIL": "problem"}


def _yuan(fen: str | float | None) -> float:
    return fen / 100.0 if isinstance(fen, float) else 0.0


def to_context(shop_id: str, frame: PmcFrame) -> OrderContext | None:
    """The order context a ``Common`` frame carries, or ``None`` for other frames and types;
    raises ``msgspec`` errors (or ``RecursionError``) for content that cannot be read."""
    if frame.commandType != "Common" or frame.message is None:
        return None
    status = STATUS.get(frame.message.type)
    if status is None:
        return None
    kind = frame.message.type
    content = _content.decode(frame.message.content or "{}")
    order_id = content.tid or content.order_sn
    if not order_id:
        return None
    now = time.time()
    ts = platform_time(frame.time, now)
    scans = tuple(
        LogisticsEvent(platform_time(t.time, ts), t.desc, TRACE_STATUS.get((t.action or "").upper()))
        for t in content.traces if t.desc)
    if kind == "pdd_logistics_TraceUpdate" and scans and scans[-1].status == "signed":
        status = "delivered"
    aftersale = None
    if kind in AFTERSALE_STATE:
        aftersale = AfterSale(str(content.refund_id or order_id), AFTERSALE_STATE[kind],
                              AFTERSALE_KIND.get(content.after_sales_type or 1, "refund"),
                              _yuan(content.refund_fee), content.refund_reason or None, ts, ts)
    buyer = content.buyer_id or content.open_id
    order = Order(order_id=str(order_id), status=status or None, amount=_yuan(content.pay_amount),
                  goods=content.goods_name or None, courier=content.shipping_name or None,
                  tracking_no=str(content.tracking_number) if content.tracking_number else None)
    return OrderContext(shop_id, order, str(buyer) if buyer else None, kind, scans, aftersale)


def ack(frame_id: int | str | None) -> dict[str, Any]:
    return {"commandType": "Ack", "id": frame_id, "sendTime": int(time.time() * 1000)}


def heartbeat() -> dict[str, Any]:
    return {"commandType": "HeartBeat", "sendTime": int(time.time() * 1000)}


class PinduoduoAdapter(Adapter):
    name = "pinduoduo"

    def parse_frames(self, body: bytes) -> tuple[list[OrderContext], list[dict[str, Any]], list[dict[str, Any]]]:
        """Context items, the ack frames to answer and the frames whose content could not be read
        (``{"index", "id", "reason"}``), for one frame or an array of them. An unreadable frame
        is acked too: the platform would only push the same bytes again."""
        try:
            frames = _frames.decode(body) if body.lstrip()[:1] == b"[" else [_frame.decode(body)]
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise WebhookError(400, _("not a PMC frame: {reason}", reason=explain(exc))) from None
        items, acks, errors = [], [], []
        for i, f in enumerate(frames):
            if f.commandType == "Common":
                acks.append(ack(f.id))
                try:
                    ctx = to_context(self.shop.id, f)
                except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
                    errors.append({"index": i, "id": f.id, "reason": _("{path}: {reason}", path="message.content", reason=explain(exc))})
                    continue
                if ctx is not None:
                    items.append(ctx)
            elif f.commandType == "Fail":
                log.warning("pmc_fail", shop_id=self.shop.id, id=f.id)
        return items, acks, errors

    def parse_webhook(self, headers: Any, body: bytes) -> WebhookResult:
        from router.core.signing import SIGNATURE_HEADER, check_signature

        secret = self.shop.secret
        if secret is None:
            raise WebhookError(401, _("shop {shop!r} has no secret configured; unsigned pushes are refused", shop=self.shop.id))
        why = check_signature(secret, body, headers.get(SIGNATURE_HEADER))
        if why is not None:
            raise WebhookError(401, why)
        items, acks, errors = self.parse_frames(body)
        return WebhookResult(context=items, response=acks, errors=errors)

    async def send(self, reply: Any) -> None:
        from adapters import DeliveryError

        raise DeliveryError("PMC carries no chat replies; give the shop a bridge callback_url")


class PmcClient:
    """Keeps a PMC WebSocket: hands each ``Common`` frame's context to the service, acks its id,
    sends a heartbeat every ``heartbeat_s``, reconnects with backoff."""

    def __init__(self, adapter: PinduoduoAdapter, url: str, heartbeat_s: float = 8.0) -> None:
        self.adapter = adapter
        self.url = url
        self.heartbeat_s = heartbeat_s
        self.received = 0

    async def run(self) -> None:
        import aiohttp

        delay = 1.0
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.ws_connect(self.url) as ws:
                        delay = 1.0
                        beat = asyncio.create_task(self._beat(ws))
                        try:
                            async for msg in ws:
                                if msg.type != aiohttp.WSMsgType.TEXT:
                                    continue
                                try:
                                    items, acks, errors = self.adapter.parse_frames(msg.data.encode())
                                except WebhookError as exc:  # not a frame: nothing to ack
                                    log.warning("pmc_bad_frame", shop_id=self.adapter.shop.id, reason=exc.reason)
                                    continue
                                for err in errors:
                                    log.warning("pmc_bad_content", shop_id=self.adapter.shop.id, **err)
                                if items and self.adapter.service is not None:
                                    await self.adapter.service.order_context(items)
                                self.received += len(acks)
                                for a in acks:
                                    await ws.send_json(a)
                        finally:
                            beat.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await beat
                except (aiohttp.ClientError, WebhookError, OSError) as exc:
                    log.warning("pmc_disconnected", shop_id=self.adapter.shop.id, error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(60.0, delay * 2)

    async def _beat(self, ws: Any) -> None:
        while True:
            await ws.send_json(heartbeat())
            await asyncio.sleep(self.heartbeat_s)
