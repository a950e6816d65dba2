"""The signed endpoints a shop's bridge and the platforms call: ``POST /v1/shops/{shop_id}/messages``
(one message or a batch), ``POST /v1/webhooks/{platform}/{shop_id}`` (a platform's own format,
parsed by its adapter) and ``POST /v1/shops/{shop_id}/ratings``. They check the signature and
the body's shape and hand the messages to :meth:`router.service.service.Service.ingest`; the
answer names every item refused by its index.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from adapters import WebhookError, adapter_class
from router.core.i18n import _, t
from router.core.ingest import decode_batch, explain, split_batch
from router.core.models import Message, RatingEvent
from router.core.signing import SIGNATURE_HEADER, check_signature
from router.service.access import signed
from router.service.errors import Overloaded
from router.service.http import SERVICE, error, error_body, json_response, read_body
from router.service.service import Service


async def _signed_body(request: web.Request, service: Service, shop_id: str) -> bytes | web.Response:
    """The raw body of a request a shop's bridge signed, or the refusal (404, 413, 401)."""
    shop = service.config.shops.get(shop_id)
    if shop is None:
        return error(404, _("unknown shop {shop!r}", shop=shop_id))
    body = await read_body(request, service.config.main.server.max_body_bytes)
    if isinstance(body, web.Response):
        service.metrics.rejected.labels("413").inc()
        return body
    secret = shop.secret
    if secret is None:
        service.metrics.rejected.labels("401").inc()
        return error(401, _("shop {shop!r} has no secret configured (set the environment variable {env}); "
                            "unsigned ingest is refused", shop=shop_id, env=shop.secret_env or "<secret_env in shops.toml>"))
    why = check_signature(secret, body, request.headers.get(SIGNATURE_HEADER))
    if why is not None:
        service.metrics.rejected.labels("401").inc()
        return error(401, why)
    return body


@signed
async def ingest(request: web.Request) -> web.Response:
    """``POST /v1/shops/{shop_id}/messages`` through the app's router: what
    :class:`~router.service.http_server.IngestFirst` does not take, such as a request with ``Expect``."""
    return await ingest_shop(request, request.app[SERVICE], request.match_info["shop_id"])


async def ingest_shop(request: web.BaseRequest, service: Service, shop_id: str) -> web.Response:
    """Ingest for ``shop_id``: the app's route above, and the fast path
    (:class:`router.service.http_server.IngestFirst`) that skips the router."""
    server = service.config.main.server
    body = await _signed_body(request, service, shop_id)
    if isinstance(body, web.Response):
        return body
    if body.lstrip()[:1] != b"[":
        items: list[msgspec.Raw] | list[bytes] = [body]  # one message, the usual case: decoded once, typed, below
    else:
        try:
            items = split_batch(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            service.metrics.rejected.labels("400").inc()
            return error(400, explain(exc))
        if not items:
            return error(400, _("empty batch: send one message or a non-empty array"))
        if len(items) > server.max_batch:
            service.metrics.rejected.labels("413").inc()
            return error(413, _("batch of {n} messages is over the limit of {limit} (server.max_batch)",
                                n=len(items), limit=server.max_batch))
    batch = decode_batch(items, shop_id)  # a bad item, even a lone one, is named by its index
    return await _submit(service, batch.messages, batch.index, batch.errors)


async def _submit(service: Service, good: list[Message], index: list[int], errors: list[dict[str, Any]],
                  ok_body: Any = None) -> web.Response:
    result = None
    if good:
        try:
            result = await service.ingest(good)
        except Overloaded as exc:
            service.metrics.rejected.labels("503").inc()
            return error(503, t(exc) or _("overloaded: the ingest queue is full, retry later"), "overloaded",
                         headers={"Retry-After": "1"}, queue_max=service.config.main.server.ingest_queue_max)
        for j, reason in result.errors:
            errors.append({"index": index[j], "msg_id": good[j].msg_id, "reason": reason})
    body: dict[str, Any] = {
        "accepted": len(result.accepted) if result else 0,
        "duplicates": len(result.duplicates) if result else 0,
    }
    if errors:
        errors.sort(key=lambda e: e["index"])
        service.metrics.rejected.labels("400").inc()
        first = errors[0]
        reason = _("item {index}: {reason}", index=first["index"], reason=first["reason"])
        if len(errors) > 1:
            reason = _("{reason} (and {n} more)", reason=reason, n=len(errors) - 1)
        body = {**error_body(400, reason, "invalid_items"),
                "errors": errors, **body,
                "accepted_ids": result.accepted if result else [],
                "duplicate_ids": result.duplicates if result else []}
        if ok_body is not None:  # a platform's answer for the items taken (e.g. PMC acks)
            body["response"] = ok_body
        return json_response(body, 400)
    if ok_body is not None:
        return json_response(ok_body, 200)
    return json_response(body, 202)


@signed
async def webhook(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    platform = request.match_info["platform"]
    shop_id = request.match_info["shop_id"]
    shop = service.config.shops.get(shop_id)
    if shop is None:
        return error(404, _("unknown shop {shop!r}", shop=shop_id))
    cls = adapter_class(platform)
    if cls is None:
        return error(404, _("unknown platform adapter {platform!r}", platform=platform))
    body = await read_body(request, service.config.main.server.max_body_bytes)
    if isinstance(body, web.Response):
        return body
    adapter = service.adapters.get(shop_id)
    if adapter is None or adapter.name != platform:
        adapter = cls(shop, service)
    try:
        result = adapter.parse_webhook(request.headers, body)
    except WebhookError as exc:
        return error(exc.status, exc.reason)
    if result.context:
        await service.order_context(result.context)
    places = result.index if result.index is not None else range(len(result.messages))
    taken = [(i, m) for i, m in zip(places, result.messages, strict=True) if m.shop_id == shop_id]
    return await _submit(service, [m for _, m in taken], [i for i, _ in taken], list(result.errors),
                         ok_body=result.response)


@signed
async def rating(request: web.Request) -> web.Response:
    """A buyer's satisfaction rating, signed by the shop's bridge like messages are."""
    service = request.app[SERVICE]
    shop_id = request.match_info["shop_id"]
    body = await _signed_body(request, service, shop_id)
    if isinstance(body, web.Response):
        return body
    try:
        event = msgspec.json.decode(body, type=RatingEvent)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return error(400, _("{reason} (expected {shape})", reason=explain(exc),
                            shape='{"type": "rating", "conversation_id", "score": 1-5}'))
    if not event.conversation_id.startswith(f"{shop_id}:"):
        return error(400, _("conversation {cid!r} is not of shop {shop!r}", cid=event.conversation_id, shop=shop_id))
    await service.event(event)
    return json_response({"accepted": 1}, 202)
