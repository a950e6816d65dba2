"""Doudian (抖店) message push → order and refund context.

The platform POSTs a JSON array of events to ``/v1/webhooks/doudian/{shop_id}``::

    [{"tag": "200", "msg_id": "7000123", "data": "{\\"p_id\\":6920000001,\\"aftersale_id\\":71,...}"}]

with headers ``app-id`` and ``event-sign = hex(md5(app_key + raw_body + app_secret))``, and
expects ``{"code": 0, "msg": "success"}``. The shop's secret (``secret_env``) holds
``APP_KEY:APP_SECRET``; a bare secret means the ``app-id`` header is the app key. ``tag`` is the
event type (订单创建 100, 支付 101, 发货 102, 完成 103, 地址变更 105, 取消 106, 物流轨迹 110,
售后申请 200, 同意 201, 拒绝 202, 买家退货 203, 退款成功 206, 售后关闭 207);
``data`` is a JSON string. Tag ``0`` is the console's verification push. The data fields read
(tests/data/adapter_doudian_push.json records them): ``p_id``, ``pay_amount`` (分),
``product_name``; on shipping ``express_company_name`` and ``logistics_code`` (运单号); on tag 110
``traces`` ``[{"time", "content", "state"}]`` (``state``: 揽收 collected, 运输中 in_transit,
派件 delivering, 签收 signed, 异常 problem); on after-sale tags ``aftersale_id``,
``aftersale_type`` (0 退货退款, 1 已发货仅退款, 2 未发货仅退款, 3 换货), ``refund_amount`` (分),
``reason_text``, ``apply_time``/``update_time``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated, Any

import msgspec

from adapters import Adapter, OrderContext, WebhookError, WebhookResult, platform_time
from adapters.fields import Fen, Id, Text, When
from router.core.i18n import _
from router.core.ingest import explain
from router.core.models import AfterSale, LogisticsEvent, Order


class DoudianEvent(msgspec.Struct):
    tag: str | int
    msg_id: str | int | None = None
    data: str = "{}"


class DoudianTrace(msgspec.Struct):
    """One parcel scan of a tag-110 event."""

    time: When = None
    content: Text = None
    state: Text = None


class DoudianData(msgspec.Struct):
    """The fields of an event's ``data`` this adapter reads; others are skipped."""

    p_id: Id = None
    order_id: Id = None
    s_id: Id = None
    pay_amount: Fen = None
    refund_amount: Fen = None
    buyer_id: Id = None
    open_id: Id = None
    product_name: Text = None
    express_company_name: Text = None
    logistics_code: Id = None
    traces: Annotated[list[DoudianTrace], msgspec.Meta(max_length=500)] = []
    aftersale_id: Id = None
    aftersale_type: int | None = None
    reason_text: Text = None
    apply_time: When = None
    update_time: When = None


_events = msgspec.json.Decoder(list[DoudianEvent])
_data = msgspec.json.Decoder(DoudianData)

STATUS = {
    "100": "created",
    "101": "paid",
    "102": "shipped",
    "103": "completed",
    "105": "address_changed",
    "106": "cancelled",
    "200": "refund_requested",
    "201": "refund_agreed",
    "202": "refund_refused",
    "203": "return_shipped",
    "206": "refunded",
    "207": "refund_closed",
    "110": "",  # scans only: the order's status stays as it was
}

#: After-sale tag → the request's state; ``aftersale_type`` → its kind.
AFTERSALE_STATE = {"200": "requested", "201": "agreed", "202": "refused", "203": "return_shipped",
                   "206": "refunded", "207": "closed"}
AFTERSALE_KIND = {0: "return", 1: "refund", 2: "refund", 3: "exchange"}
TRACE_STATUS = {"揽收": "collected", "运输中": "in_transit", "派件": "delivering", "签收": "signed", "异常": "problem"}


def _yuan(fen: str | float | None) -> float:
    return fen / 100.0 if isinstance(fen, float) else 0.0

OK = {"code": 0, "msg": "success"}


def event_sign(app_key: str, body: bytes, app_secret: str) -> str:
    return hashlib.md5(app_key.encode() + body + app_secret.encode()).hexdigest()  # noqa: S324 - the platform's scheme


class DoudianAdapter(Adapter):
    name = "doudian"

    def _keys(self, app_id: str) -> tuple[str, str]:
        secret = self.shop.secret
        if secret is None:
            raise WebhookError(401, _("shop {shop!r} has no secret configured (APP_KEY:APP_SECRET in {env})",
                                      shop=self.shop.id, env=self.shop.secret_env or "secret_env"))
        text = secret.decode()
        if ":" in text:
            key, _sep, sec = text.partition(":")
            if app_id and app_id != key:
                raise WebhookError(401, _("app-id {app_id!r} is not this shop's app", app_id=app_id))
            return key, sec
        return app_id, text

    def parse_webhook(self, headers: Any, body: bytes) -> WebhookResult:
        app_id = headers.get("app-id", "")
        sign = headers.get("event-sign", "").strip().lower()
        if not sign:
            raise WebhookError(401, _("missing event-sign header"))
        # Header text is not ASCII-checked by HTTP: md5 of it, or compare_digest, would raise.
        if not sign.isascii():
            raise WebhookError(401, _("event-sign must be the hex md5(app_key + body + app_secret)"))
        if not app_id.isascii():
            raise WebhookError(401, _("app-id must be ASCII"))
        key, secret = self._keys(app_id)
        if not hmac.compare_digest(event_sign(key, body, secret), sign):
            raise WebhookError(401, _("event-sign does not match md5(app_key + body + app_secret)"))
        try:
            events = _events.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise WebhookError(400, _("not a Doudian push: {reason}", reason=explain(exc))) from None
        items, errors = [], []
        for i, ev in enumerate(events):
            try:
                ctx = to_context(self.shop.id, ev)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
                errors.append({"index": i, "msg_id": ev.msg_id, "reason": _("{path}: {reason}", path="data", reason=explain(exc))})
                continue
            if ctx is not None:
                items.append(ctx)
        return WebhookResult(context=items, response=OK, errors=errors)


def to_context(shop_id: str, ev: DoudianEvent) -> OrderContext | None:
    """The order context of an event of a known tag, ``None`` for other tags or data without an
    order id; raises ``msgspec`` errors (or ``RecursionError``) for data that cannot be read."""
    tag = str(ev.tag)
    status = STATUS.get(tag)
    if status is None:
        return None
    data = _data.decode(ev.data or "{}")
    order_id = data.p_id or data.order_id or data.s_id
    if not order_id:
        return None
    ts = platform_time(data.update_time, time.time())
    scans = tuple(LogisticsEvent(platform_time(t.time, ts), t.content, TRACE_STATUS.get(t.state or ""))
                  for t in data.traces if t.content)
    if tag == "110" and scans and scans[-1].status == "signed":
        status = "delivered"
    aftersale = None
    if tag in AFTERSALE_STATE:
        aftersale = AfterSale(str(data.aftersale_id or order_id), AFTERSALE_STATE[tag],
                              AFTERSALE_KIND.get(data.aftersale_type if data.aftersale_type is not None else 1, "refund"),
                              _yuan(data.refund_amount), data.reason_text or None,
                              platform_time(data.apply_time, ts), ts)
    buyer = data.buyer_id or data.open_id
    order = Order(order_id=str(order_id), status=status or None, amount=_yuan(data.pay_amount),
                  goods=data.product_name or None, courier=data.express_company_name or None,
                  tracking_no=str(data.logistics_code) if data.logistics_code else None)
    return OrderContext(shop_id, order, str(buyer) if buyer else None, f"doudian:{tag}", scans, aftersale)
