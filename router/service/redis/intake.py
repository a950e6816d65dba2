"""What callers hand an instance among several sharing a Redis.

- **Ingest is stateless.** Any instance takes a signed batch, drops the messages already seen
  (the shop's sorted set of ``msg_id`` by the end of their dedupe window) and appends the rest to
  the stream of the shop's shard as one entry, in one Lua call, one round trip. ``202`` only
  after Redis answered; Redis unreachable → ``503``.
- **Agents may connect anywhere.** Their requests (accept, close, transfer) travel through the
  conversation's shard stream to its owner, in order with the messages, and the asker waits for
  the owner's verdict; replies are checked and stored where they are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
from redis.exceptions import RedisError

from adapters import OrderContext, OutboundReply
from router.core import i18n
from router.core.config import Config
from router.core.models import (
    AgentStatusEvent,
    CloseEvent,
    Conversation,
    Decision,
    Event,
    Message,
    OutboundResult,
    TransferEvent,
    WsHistoryItem,
)
from router.core.pipeline import InputError
from router.service.access import Scope
from router.service.errors import NotYours, Overloaded
from router.service.loop import IngestResult
from router.storage.writer import write_rows

if TYPE_CHECKING:
    from router.service.redis.service import RedisService

_encode = msgspec.json.Encoder().encode
_conversation = msgspec.json.Decoder(Conversation)

DEDUPE_S = 2 * 86400
REQUEST_TIMEOUT_S = 10.0


class Unavailable(Overloaded):
    """Redis did not answer: nothing was stored, so nothing may be acknowledged."""


class Refused(InputError):
    """A request the conversation's owner refused, with the HTTP status and error code a local
    refusal of the same request would have (so an endpoint answers alike on every instance)."""

    def __init__(self, reason: Any, status: int = 409, code: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code


class Requester(msgspec.Struct, omit_defaults=True):
    """Who asked for a forwarded request: the account's fields the isolation rule reads, so the
    owner rebuilds the asker's :class:`router.service.access.Scope` and checks what a local request is
    checked for. ``via`` is ``ws`` (the agent's socket: its own conversations only) or ``http``
    (``POST /v1/conversations/{cid}/transfer``: a supervisor may move others')."""

    account: str
    role: str
    shops: tuple[str, ...]
    agent_id: str | None = None
    via: str = "ws"

    @classmethod
    def of(cls, scope: Scope, via: str = "ws") -> Requester:
        a = scope.account
        return cls(a.name, a.role, tuple(a.shops), a.agent_id, via)

    def scope(self, config: Config) -> Scope:
        from router.storage.accounts import Account

        return Scope(Account(self.account, self.role, self.shops, agent_id=self.agent_id), config)  # type: ignore[arg-type]


class SharedIntake:
    """Ingest into the shard streams, requests forwarded to the conversation's owner."""

    def __init__(self, service: RedisService) -> None:
        self.service = service
        self.link = service.link
        #: Forwarded requests waiting for their owner's verdict, by request id.
        self.waiting: dict[str, asyncio.Future] = {}

    async def ingest(self, messages: list[Message]) -> IngestResult:
        """Append to the shop's shard stream (deduped); returns once Redis has them."""
        s, link = self.service, self.link
        if s.stopping:
            raise Overloaded
        result = IngestResult()
        groups: dict[str, list[Message]] = {}
        for msg in messages:
            groups.setdefault(msg.shop_id, []).append(msg)
        limit = s.config.main.server.ingest_queue_max
        try:
            for shop, msgs in groups.items():
                n = link.keys.shard(shop)
                keys = [link.keys.stream(n), link.keys.backlog(n), link.keys.dedupe(shop),
                        *(link.keys.seen(shop, m.msg_id) for m in msgs)]
                link.rt["ingest"].inc()
                flags = await link.ingest(keys=keys, args=[DEDUPE_S, limit, int(time.time()), len(msgs),
                                                           *(m.msg_id for m in msgs), *(_encode(m) for m in msgs)])
                if flags == [-1]:
                    raise Overloaded(i18n._("overloaded: shard {n} has {limit} messages waiting to be routed, retry later",
                                            n=n, limit=limit))
                for m, fresh in zip(msgs, flags, strict=True):
                    if fresh:
                        result.accepted.append(m.msg_id)
                        s.metrics.count(s.metrics.messages, m.shop_id)
                    else:
                        result.duplicates.append(m.msg_id)
                        s.metrics.count(s.metrics.duplicates, m.shop_id)
        except RedisError as exc:
            link.log.warning("ingest_unavailable", error=str(exc), accepted=len(result.accepted))
            raise Unavailable(f"storage unavailable: {exc}") from exc
        return result

    async def event(self, event: Event, requester: str | Scope | None = None, *, via: str = "ws") -> list[Decision]:
        """Agent status changes apply everywhere at once; conversation events go to the owner of
        the conversation's shard, in order with its messages, and this waits for the verdict.
        ``requester``: the asker's scope (the owner checks it as a local request is checked;
        ``via`` says which), or an agent id (the holder check only). A refusal raises
        :class:`Refused`."""
        s, link = self.service, self.link
        try:
            if isinstance(event, AgentStatusEvent):
                if event.agent_id not in s.config.agents:
                    raise InputError(i18n._("unknown agent {agent!r}", agent=event.agent_id))
                await s.claims.set_status(event.agent_id, event.status)
                return []
            cid = event.conversation_id  # type: ignore[union-attr]
            shop = cid.partition(":")[0]
            if shop not in s.config.shops:
                raise InputError(i18n._("no open conversation {cid!r}", cid=cid))
            req = uuid.uuid4().hex
            fut: asyncio.Future = asyncio.get_running_loop().create_future()
            self.waiting[req] = fut
            try:
                link.rt["request"].inc()
                entry = {"k": "e", "b": _encode(event), "req": req, "inst": link.id}
                if isinstance(requester, Scope):  # "who" stays for an owner of an older version
                    entry["who"] = requester.agent_id or ""
                    entry["as"] = _encode(Requester.of(requester, via))
                else:
                    entry["who"] = requester or ""
                await link.r.xadd(link.keys.stream(link.keys.shard(shop)), entry)
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    ok, reason, status, code = await fut
            finally:
                self.waiting.pop(req, None)
        except RedisError as exc:
            raise InputError(i18n._("storage unavailable: {detail}", detail=str(exc))) from exc
        except TimeoutError:
            raise InputError(i18n._("the conversation's router did not answer in time; retry")) from None
        if not ok:
            raise Refused(reason, status or 409, code)
        return []

    def verdict(self, res: dict[str, Any]) -> None:
        """An owner's answer to a request this instance forwarded."""
        fut = self.waiting.get(res["req"])
        if fut is not None and not fut.done():
            fut.set_result((res["ok"], i18n.revive(res["reason"]),  # the asker translates
                            res.get("status"), res.get("code")))

    async def reply(self, agent_id: str, conversation_id: str, text: str) -> OutboundResult:
        """Checked and sent by the instance the agent is connected to; the claim in Redis says
        whether the conversation is the agent's."""
        s, link = self.service, self.link
        shop = conversation_id.partition(":")[0]
        if shop not in s.config.shops:
            raise NotYours(i18n._("no open conversation {cid!r}", cid=conversation_id))
        n = link.keys.shard(shop)
        owner, raw = await link.r.pipeline(transaction=False).hget(link.keys.owners(n), conversation_id) \
            .hget(link.keys.convs(n), conversation_id).execute()
        if owner is None or owner.decode() != agent_id:
            raise NotYours(i18n._("conversation {cid!r} is not yours", cid=conversation_id))
        if raw is not None and _conversation.decode(raw).state == "reserved":
            raise NotYours(i18n._("accept conversation {cid!r} before replying", cid=conversation_id))
        result = await s.router.check_reply(shop, text, conversation_id, agent_id)
        if not result.ok:
            s.metrics.replies.labels("refused").inc()
            if s.pg is not None and result.hits:  # quality inspection reads them from every instance
                await s.pg.records.add_violations([(time.time(), shop, conversation_id, agent_id, h.word, h.tag or "",
                                                    h.source) for h in result.hits])
            return result
        now = time.time()
        buyer = conversation_id.partition(":")[2]
        if s.pg is not None:  # sent by whichever instance's sender claims the row (normally this one)
            rid = await s.pg.reply(shop, conversation_id, buyer, agent_id, result.text, now)
        else:
            rid = await s.store.call(  # the reply's outbox row, as the journal writer writes it
                lambda c: write_rows(c, [("reply", shop, conversation_id, buyer, agent_id, result.text, now)])[0])
            s.outbox.queue(OutboundReply(rid, shop, conversation_id, buyer, result.text, now, agent_id), now, 0)
        s.metrics.replies.labels("sent").inc()
        if s.pg is None:  # with PostgreSQL the live figures follow every instance's replies (router/service/redis/pg.py)
            s.journaled([("reply", shop, conversation_id, buyer, agent_id, result.text, now)], {0: rid})
        with contextlib.suppress(RedisError):  # the reply is stored and will be sent: only its place in the history is lost
            link.rt["request"].inc()
            await link.r.xadd(link.keys.stream(n), {"k": "r", "c": conversation_id,
                                                    "b": _encode(WsHistoryItem("agent", result.text, now, agent_id=agent_id))})
        return result

    async def order_context(self, items: list[OrderContext]) -> None:
        s = self.service
        if s.pg is not None:
            await s.pg.records.record_story(items, time.time())
        writes, pushes = s.buyers.apply_context(items, s.clock)
        if writes and s.pg is not None:
            await s.pg.records.save_orders(writes)
        elif writes:
            await s.store.call(lambda c: write_rows(c, [("orders", writes)]))
        s.desk.tell_context(pushes)

    async def reload(self, config: Config) -> list[Decision]:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.service.engine.put(("reload", config, fut))
        return await fut


_requester = msgspec.json.Decoder(Requester)


def owner_refusal(config: Config, agents: dict[str, Any], event: Event, conv: Conversation | None,
                  fields: dict[bytes, bytes]) -> tuple[Any, int, str | None] | None:
    """Why the owner refuses a forwarded request, checked as the asking instance would check
    it locally (router/service/ws.py, ``POST /v1/conversations/{cid}/transfer``): the asker's scope
    (its shops, the agents it may move to), then the holder (an agent's socket acts on its own
    conversations; a supervisor over HTTP moves anyone's) and the target's shift (``agents``: the
    owner's dispatcher's). ``None``: go ahead (the router may still refuse)."""
    moving = isinstance(event, (CloseEvent, TransferEvent))
    cid = getattr(event, "conversation_id", "")
    raw = fields.get(b"as")
    if raw is None:  # an agent id only (an asker of an older version, or accept)
        who = fields.get(b"who", b"").decode()
        if not who or not moving or (conv is not None and conv.agent_id == who):
            return None
        return (i18n._("no open conversation {cid!r}", cid=cid) if conv is None
                else i18n._("conversation {cid!r} is not yours", cid=cid)), 409, None
    asker = _requester.decode(raw)
    scope = asker.scope(config)
    http = asker.via == "http"
    if not scope.sees_conversation(cid):
        if http:
            shop = cid.partition(":")[0]
            return i18n._("forbidden: shop {shop!r} is not permitted to account {account!r}",
                          shop=shop, account=asker.account), 403, "shop_forbidden"
        return i18n._("forbidden: that shop is not permitted to your account"), 403, "shop_forbidden"
    to_agent = event.to_agent if isinstance(event, TransferEvent) else None
    if to_agent is not None and to_agent not in scope.visible_agents():
        return i18n._("unknown agent {agent!r}", agent=to_agent), 404, "unknown_agent"
    if not moving:
        return None
    if conv is None:
        return i18n._("no open conversation {cid!r}", cid=cid), 404, None
    if http and not scope.is_supervisor and (scope.agent_id is None or conv.agent_id != scope.agent_id):
        return i18n._("forbidden: conversation {cid!r} is not yours, and moving others' needs a supervisor",
                      cid=cid), 403, None
    if not http and conv.agent_id != scope.agent_id:
        return i18n._("conversation {cid!r} is not yours", cid=cid), 403, None
    target = agents.get(to_agent or "")
    if http and target is not None and not target.in_shift:
        return i18n._("agent {agent!r} is off shift", agent=to_agent), 409, "agent_off_shift"
    return None
