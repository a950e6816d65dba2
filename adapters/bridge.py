"""The ``bridge`` adapter: an agency's own bridge posts buyers' chats in, and takes replies out.

Inbound, a bridge uses the signed ingest endpoint (``POST /v1/shops/{shop_id}/messages``) or,
equivalently, ``POST /v1/webhooks/bridge/{shop_id}`` with the same body and signature. Outbound,
each reply is POSTed as JSON to the shop's ``callback_url``, signed the same way with the shop's
secret (``X-Fenliu-Signature``). Any 2xx answer acknowledges it; anything else (or no answer
within the timeout) raises :class:`DeliveryError` and the service retries with backoff, the
reply staying journaled in the ``outbox`` table until then. ``reply_id`` is stable across retries
so the bridge can drop a duplicate delivery.

Exactly once across crashes: when the outcome of an attempt is unknown (the sending instance
died before it recorded the answer, or the request timed out after it was written), the next
attempt first asks ``GET {callback_url}?reply_id=N`` (signed over ``reply_id=N``). A bridge that
answers ``200 {"delivered": true}`` is not sent the reply again; ``{"delivered": false}`` gets it
as usual. A bridge without the lookup (any other answer) gets it again with the header
``X-Fenliu-Redelivery: 1``, the same ``reply_id``, and drops it if it already has it.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec

from adapters import Adapter, DeliveryError, OutboundReply, WebhookError, WebhookResult
from router.core.i18n import _
from router.core.ingest import decode_batch, explain, split_batch

TIMEOUT = aiohttp.ClientTimeout(total=10)
#: The header that marks a reply that may have been delivered before.
REDELIVERY_HEADER = "X-Fenliu-Redelivery"


class Lookup(msgspec.Struct):
    """The bridge's answer to ``GET {callback_url}?reply_id=N``."""

    delivered: bool


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

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=TIMEOUT)
        return self._http

    def _where(self) -> tuple[str, bytes]:
        url = self.shop.callback_url
        if not url:
            raise DeliveryError(f"shop {self.shop.id!r} has no callback_url; reply kept in the outbox")
        secret = self.shop.secret
        if secret is None:
            raise DeliveryError(f"shop {self.shop.id!r} has no secret to sign the callback with")
        return url, secret

    async def send(self, reply: OutboundReply) -> None:
        from router.core.signing import SIGNATURE_HEADER, sign

        url, secret = self._where()
        body = msgspec.json.encode(CallbackBody(reply.id, reply.shop_id, reply.conversation_id, reply.buyer_id,
                                                reply.text, reply.ts, reply.agent_id))
        headers = {SIGNATURE_HEADER: sign(secret, body), "Content-Type": "application/json"}
        if reply.redelivery:
            headers[REDELIVERY_HEADER] = "1"
        try:
            async with self._client().post(url, data=body, headers=headers) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    raise DeliveryError(f"callback answered {resp.status}")
        except aiohttp.ClientConnectorError as exc:  # never connected: nothing was sent
            raise DeliveryError(f"callback failed: {type(exc).__name__}: {exc}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:  # sent, no answer: the bridge may have it
            raise DeliveryError(f"callback failed: {type(exc).__name__}: {exc}", maybe_delivered=True) from None

    async def delivered(self, reply: OutboundReply) -> bool | None:
        """Ask the bridge whether it has ``reply``; ``None`` when it does not answer the lookup."""
        from router.core.signing import SIGNATURE_HEADER, sign

        url, secret = self._where()
        query = f"reply_id={reply.id}"
        try:
            async with self._client().get(url, params=query,  # the very bytes signed
                                          headers={SIGNATURE_HEADER: sign(secret, query.encode())}) as resp:
                body = await resp.read()
                if resp.status != 200:
                    return None
            return msgspec.json.decode(body, type=Lookup).delivered
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError, msgspec.ValidationError):
            return None

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
