"""Doudian (抖店) message push → order and refund context.

The platform POSTs a JSON array of events to ``/v1/webhooks/doudian/{shop_id}``::

    [{"tag": "200", "msg_id": "7000123", "data": "{\\"p_id\\":6920000001,\\"aftersale_id\\":71,...}"}]

with headers ``app-id`` and ``event-sign = hex(md5(app_key + raw_body + app_secret))``, and
expects ``{"code": 0, "msg": "success"}``. The shop's secret (``secret_env``) holds
``APP_KEY:APP_SECRET``; a bare secret means the ``app-id`` header is the app key. ``tag`` is the
event type (订单创建 100, 支付 101, 发货 102, 完成 103, 地址变更 105, 取消 106, 售后申请 200 …);
``data`` is a JSON string. Tag ``0`` is the console's verification push.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec

from adapters import Adapter, OrderContext, WebhookError, WebhookResult
from router.models import Order


class DoudianEvent(msgspec.Struct):
    tag: str | int
    msg_id: str | int | None = None
    data: str = "{}"


_events = msgspec.json.Decoder(list[DoudianEvent])

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
}

OK = {"code": 0, "msg": "success"}


def event_sign(app_key: str, body: bytes, app_secret: str) -> str:
    return hashlib.md5(app_key.encode() + body + app_secret.encode()).hexdigest()  # noqa: S324 - the platform's scheme


class DoudianAdapter(Adapter):
    name = "doudian"

    def _keys(self, app_id: str) -> tuple[str, str]:
        secret = self.shop.secret
        if secret is None:
            raise WebhookError(401, f"shop {self.shop.id!r} has no secret configured (APP_KEY:APP_SECRET in "
                                    f"{self.shop.secret_env or 'secret_env'})")
        text = secret.decode()
        if ":" in text:
            key, _, sec = text.partition(":")
            if app_id and app_id != key:
                raise WebhookError(401, f"app-id {app_id!r} is not this shop's app")
            return key, sec
        return app_id, text

    def parse_webhook(self, headers: Any, body: bytes) -> WebhookResult:
        app_id = headers.get("app-id", "")
        sign = headers.get("event-sign", "")
        if not sign:
            raise WebhookError(401, "missing event-sign header")
        key, secret = self._keys(app_id)
        if not hmac.compare_digest(event_sign(key, body, secret), sign.strip().lower()):
            raise WebhookError(401, "event-sign does not match md5(app_key + body + app_secret)")
        try:
            events = _events.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            from router.ingest import explain

            raise WebhookError(400, f"not a Doudian push: {explain(exc)}") from None
        items = []
        for ev in events:
            ctx = to_context(self.shop.id, ev)
            if ctx is not None:
                items.append(ctx)
        return WebhookResult(context=items, response=OK)


def to_context(shop_id: str, ev: DoudianEvent) -> OrderContext | None:
    status = STATUS.get(str(ev.tag))
    if status is None:
        return None
    try:
        data = msgspec.json.decode(ev.data or "{}")
    except msgspec.DecodeError:
        return None
    if not isinstance(data, dict):
        return None
    order_id = data.get("p_id") or data.get("order_id") or data.get("s_id")
    if not order_id:
        return None
    amount = data.get("pay_amount") or data.get("refund_amount") or 0
    buyer = data.get("buyer_id") or data.get("open_id")
    return OrderContext(shop_id, Order(order_id=str(order_id), status=status,
                                       amount=float(amount) / 100.0 if isinstance(amount, int | float) else 0.0),
                        str(buyer) if buyer else None, f"doudian:{ev.tag}")
