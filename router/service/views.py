"""What the service shows of open conversations to the HTTP API (the list, one conversation, the
target of a note), on one instance: its router holds every open conversation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from router.core import i18n
from router.core.models import Buyer, Conversation, Order, WsHistoryItem
from router.service.errors import NotYours
from router.storage.buyer_rows import conversation_notes

if TYPE_CHECKING:
    from router.service.service import Service


class ConversationView(NamedTuple):
    """An open conversation as ``GET /v1/conversations/{id}`` shows it."""

    conversation: Conversation
    history: list[WsHistoryItem]
    notes: list[dict[str, Any]]
    buyer: Buyer | None
    order: Order | None


class LocalView:
    """The open conversations this instance routes (all of them on one instance)."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def open_conversations(self) -> list[Conversation]:
        return list(self.service.router.dispatcher.conversations.values())

    async def conversation_view(self, cid: str) -> ConversationView | None:
        s = self.service
        conv = s.router.dispatcher.conversations.get(cid)
        if conv is None:
            return None
        buyer, order = s.memory.context.get(cid, (None, None))
        notes = await s.store.call(lambda c: conversation_notes(c, cid, conv.opened_at))
        return ConversationView(conv, list(s.memory.history.get(cid, ())), notes, buyer, order)

    async def note_target(self, agent_id: str | None, cid: str) -> tuple[str, str]:
        """The shop and buyer a note on ``cid`` is about; any open conversation may be noted."""
        conv = self.service.router.dispatcher.conversations.get(cid)
        if conv is None:
            raise NotYours(i18n._("no open conversation {cid!r}", cid=cid))
        return conv.shop_id, conv.buyer_id
