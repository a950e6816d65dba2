"""What an instance among several shows of open conversations: with PostgreSQL, any instance
shows any of them (the Redis mirror's state, the history every instance wrote); without it, the
conversations it routes itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from router.core import i18n
from router.core.models import Conversation
from router.service.errors import NotYours
from router.service.views import ConversationView, LocalView

if TYPE_CHECKING:
    from router.service.redis.service import RedisService

_conversation = msgspec.json.Decoder(Conversation)


class SharedView:
    """The API's view of open conversations across instances."""

    def __init__(self, service: RedisService) -> None:
        self.service = service
        self.link = service.link
        self.local = LocalView(service)

    async def open_conversations(self) -> list[Conversation]:
        pg = self.service.pg
        return await pg.open_conversations() if pg is not None else await self.local.open_conversations()

    async def conversation_view(self, cid: str) -> ConversationView | None:
        """With PostgreSQL, any instance shows any open conversation: the mirror's state, the
        history and notes every instance wrote (the buyer and order only where it is routed)."""
        s = self.service
        if s.pg is None:
            return await self.local.conversation_view(cid)
        found = await s.pg.conversation(cid)
        if found is None:
            return None
        conv, items, notes = found
        local = s.desk.snapshot(cid)
        return ConversationView(conv, items, notes, local.buyer if local else None, local.order if local else None)

    async def note_target(self, agent_id: str | None, cid: str) -> tuple[str, str]:
        """A note is checked against the claim in Redis, not against this instance's router,
        which may not route the conversation: an agent notes only what it holds."""
        shop, _, buyer = cid.partition(":")
        k = self.link.keys
        owner = await self.link.r.hget(k.owners(k.shard(shop)), cid)
        if agent_id is not None and (owner is None or owner.decode() != agent_id):
            raise NotYours(i18n._("conversation {cid!r} is not yours", cid=cid))
        return shop, buyer

    async def mirrored(self, cids: list[str]) -> dict[str, Conversation]:
        """Open conversations by id from their shards' mirrors in Redis (one round trip), as every
        instance sees them, whichever routes them: the 售后 list's state and agent."""
        cids = [c for c in dict.fromkeys(cids) if c.partition(":")[0] in self.service.config.shops]
        if not cids:
            return {}
        k = self.link.keys
        pipe = self.link.r.pipeline(transaction=False)
        for cid in cids:
            pipe.hget(k.convs(k.shard_of_conversation(cid)), cid)
        return {cid: _conversation.decode(raw) for cid, raw in zip(cids, await pipe.execute(), strict=True)
                if raw is not None}
