"""The ``bridge`` adapter: an agency's own bridge posts buyers' chats in, and takes replies out.

Inbound, a bridge uses the signed ingest endpoint (``POST /v1/shops/{shop_id}/messages``) or,
equivalently, ``POST /v1/webhooks/bridge/{shop_id}`` with the same body and signature. Outbound,
each reply is POSTed as JSON to the shop's ``callback_url``, signed the same way with the shop's
secret (``X-Fenliu-Signature``). Any 2xx answer acknowledges it; anything else (or no answer
within the timeout) raises :class:`DeliveryError` and the service retries with backoff, the
reply staying journaled in the ``outbox`` table until then. ``reply_id`` is stable across retries
so the bridge can drop a duplicate delivery.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec

from adapters import Adapter, DeliveryError, OutboundReply, WebhookError, WebhookResult
from router.core.i18n import _
from router.core.ingest import decode_batch, explain, split_batch

TIMEOUT = aiohttp.ClientTimeout(total=10)


class CallbackBody(msgspec.Struct):
    """What the bridge receives for each reply."""

    reply_id: int
    shop_id: str
    conversation_id: str
    buyer_id: str
    text: str
    ts: float
    agent_id: str | None = None


class BridgeAdapter(Adapter):
    name = "bridge"

    def __init__(self, shop: Any, service: Any = None) -> None:
        super().__init__(shop, service)
        self._http: aiohttp.ClientSession | None = None

    async def send(self, reply: OutboundReply) -> None:
        from router.core.signing import SIGNATURE_HEADER, sign

        url = self.shop.callback_url
        if not url:
            raise DeliveryError(f"shop {self.shop.id!r} has no callback_url; reply kept in the outbox")
        secret = self.shop.secret
        if secret is None:
            raise DeliveryError(f"shop {self.shop.id!r} has no secret to sign the callback with")
        body = msgspec.json.encode(CallbackBody(reply.id, reply.shop_id, reply.conversation_id, reply.buyer_id,
                                                reply.text, reply.ts, reply.agent_id))
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=TIMEOUT)
        try:
            async with self._http.post(url, data=body, headers={SIGNATURE_HEADER: sign(secret, body),
                                                                "Content-Type": "application/json"}) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    raise DeliveryError(f"callback answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"callback failed: {type(exc).__name__}: {exc}") from None

    def parse_webhook(self, headers: Any, body: bytes) -> WebhookResult:
        from router.core.signing import SIGNATURE_HEADER, check_signature

        secret = self.shop.secret
        if secret is None:
            raise WebhookError(401, _("shop {shop!r} has no secret configured; unsigned ingest is refused", shop=self.shop.id))
        why = check_signature(secret, body, headers.get(SIGNATURE_HEADER))
        if why is not None:
            raise WebhookError(401, why)
        try:
            items = split_batch(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise WebhookError(400, explain(exc)) from None
        batch = decode_batch(items, self.shop.id)  # each item on its own: a bad one is named, the rest go through
        return WebhookResult(messages=batch.messages, index=batch.index, errors=batch.errors)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
