"""The per-message context handed to hooks.

A plain slotted class rather than a Struct: it is built once per message on the hot path (or,
while every routing hook is a built-in one and nothing observes, one is rebound to each message:
:meth:`HookContext.rebind`) and mutated as the hooks run (``text``, ``skill``, ``priority``,
``flags``). The built-in hooks do not keep it past their call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.core.config import Config, Shop
    from router.core.dispatch import Dispatcher
    from router.core.models import Conversation


class HookContext:
    """What a hook may read (and, for ``flags``, add to) about the message being routed.

    - ``config``: the live :class:`router.core.config.Config`.
    - ``shop``: the shop's config; ``policy``: its policy, with plugin sections as attributes.
    - ``conversation``: the open conversation of this buyer at this shop, or ``None``.
    - ``now``: the router's clock (epoch seconds; virtual in ``route`` and ``simulate``).
    - ``text``: the text the agent will see (after masks); ``skill`` and ``priority`` as set by
      the earlier hooks; ``flags``: findings that end up on the decision.
    - ``meta``: per-conversation plugin state: the conversation's ``meta``, or for a new
      conversation a dict the pipeline copies into it once it is opened.
    - ``replay``: ``True`` while the service rebuilds its state from the journal on start: the
      message or event was routed before, so rebuild what you keep in memory, but do not notify
      anyone again (an observer that sends messages would otherwise resend the whole history).
    - ``dropped``: the ``(hook, plugin)`` calls whose results were dropped for this message
      (raised, overran the budget, wrong type); the service journals them so that replay drops
      the same results.
    """

    __slots__ = (
        "config", "shop", "policy", "conversation", "now", "text", "skill", "priority", "flags",
        "meta", "replay", "dropped", "_dispatcher",
    )

    def __init__(
        self,
        config: Config,
        shop: Shop,
        now: float,
        conversation: Conversation | None = None,
        dispatcher: Dispatcher | None = None,
        text: str = "",
        policy: Any = None,
        replay: bool = False,
    ) -> None:
        """``policy``: the shop's policy when the caller has it at hand (else it is looked up)."""
        self.config = config
        self.shop = shop
        self.policy: Any = policy if policy is not None else config.policy_for(shop.id)
        self.conversation = conversation
        self.now = now
        self.text = text
        self.skill: str | None = conversation.skill if conversation is not None else None
        self.priority = 0
        self.flags: list[str] = []
        self.meta: dict[str, object] = conversation.meta if conversation is not None else {}
        self.replay = replay
        self.dropped: list[tuple[str, str]] = []
        self._dispatcher = dispatcher

    @classmethod
    def reusable(cls, config: Config, dispatcher: Dispatcher) -> HookContext:
        """A context of ``config`` and ``dispatcher`` whose message :meth:`rebind` sets."""
        ctx = cls.__new__(cls)
        ctx.config = config
        ctx._dispatcher = dispatcher
        ctx.rebind(None, 0.0, None, "", None, False)  # type: ignore[arg-type]
        return ctx

    def rebind(self, shop: Shop, now: float, conversation: Conversation | None, text: str, policy: Any,
               replay: bool) -> None:
        """Make this the context of the next message of the same configuration and dispatcher,
        as :meth:`__init__` would have made it (the pipeline reuses one context when every
        routing hook is a built-in one and nothing observes: none of them keeps it)."""
        self.shop = shop
        self.policy = policy
        self.conversation = conversation
        self.now = now
        self.text = text
        self.skill = conversation.skill if conversation is not None else None
        self.priority = 0
        self.flags = []
        self.meta = conversation.meta if conversation is not None else {}
        self.replay = replay
        self.dropped = []

    @property
    def is_new(self) -> bool:
        """True when the buyer has no open conversation at this shop."""
        return self.conversation is None

    def agents_available(self, skill: str | None = None) -> int:
        """How many agents could take a new conversation of this shop now (optionally of a skill)."""
        d = self._dispatcher
        if d is None:
            return 0
        return d.online_count(self.shop.id) if skill is None else d.available_count(self.shop.id, skill)

    def in_business_hours(self) -> bool:
        """Whether the shop is open at ``now`` by its ``business_hours``: the dispatcher's flag,
        which its timers flip at each opening and closing, where there is one (working it out
        from the schedule costs a time-zone conversion per message)."""
        d = self._dispatcher
        if d is not None and d.now == self.now:
            known = d._shop_open.get(self.shop.id)
            if known is not None:
                return known
        return self.shop.is_open(self.now)

    def staffed(self) -> bool:
        """Whether the shop is open and someone is online to answer (the bot asks it before it
        suggests an answer an agent has to click)."""
        return self.in_business_hours() and self.agents_available() > 0

    def flag(self, flag: str) -> None:
        if flag not in self.flags:
            self.flags.append(flag)
