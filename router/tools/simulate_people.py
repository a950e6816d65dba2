"""The simulated people: buyers who wait, lose patience and leave, agents who accept, reply,
close and hand chats on, all with delays drawn from the scenario. They react to the real
router's decisions; when they act is put on the simulation's agenda (router/tools/simulate.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from router.tools.scenario import NEEDED_SKILL, ConvSpec, Draws

if TYPE_CHECKING:
    from router.core.config import Config
    from router.core.models import AgentState
    from router.tools.scenario import Scenario
    from router.tools.simulate_measures import Measures

INF = math.inf
# What the agenda holds: conversation actions, then agent actions (``RELEASE`` runs after the
# buyer side is over); the versioned ones are void once the chat has moved to another agent.
MSG, ACCEPT, REPLY, CLOSE, LEAVE, IDLE, TRANSFER, HANDOFF, RELEASE, BREAK, BACK = range(11)
VERSIONED = frozenset((ACCEPT, REPLY, CLOSE, TRANSFER))
TRANSFER_DELAY_S = 30.0

Push = Callable[[float, int, Any, int], None]


class Conv:
    """The simulator's view of one conversation as the buyer lives it (the router keeps its own)."""

    __slots__ = ("cid", "spec", "t0", "need_at", "agent", "ver", "qskill", "skill", "replied",
                 "closed", "patience", "handle_u", "transfer_u", "acw_u", "draws", "nmsg", "answered",
                 "transferred", "leave_at", "leave_set", "need", "last_t", "mode", "group", "left")

    def __init__(self, cid: str, spec: ConvSpec, draws: Draws, patience: float, group: tuple[str, bool]) -> None:
        self.cid = cid
        self.spec = spec
        self.t0 = spec.times[0]
        self.last_t = spec.times[-1]
        self.need = spec.category
        self.draws = draws
        self.need_at: float | None = None
        self.agent: str | None = None
        self.ver = 0
        self.qskill: str | None = None
        self.skill: str | None = None
        self.replied: float | None = None
        self.closed = False
        self.patience = patience
        self.handle_u = draws.u()
        self.transfer_u = draws.u()
        self.acw_u = draws.u()
        self.nmsg = 0
        self.answered = 0
        self.transferred = False
        self.leave_at = INF
        self.leave_set = False
        self.mode = ""  # "suggest" / "answer_and_handoff" once the bot handed the chat on
        self.group = group  # (platform, vip)
        self.left: float | None = None


class People:
    """Buyers and agents: what the router's decisions mean for them, and what they do next.
    ``agents`` are the router's agent states (their open chats slow them down), ``record`` is
    told every conversation that ends and how."""

    def __init__(self, config: Config, scenario: Scenario, seed: int, agents: dict[str, AgentState],
                 push: Push, measures: Measures, record: Callable[[Conv, str], None]) -> None:
        self.s = scenario
        self.seed = seed
        self.agents = agents
        self.push = push
        self.measures = measures
        self.record = record
        self._depth = measures.set_depth
        self._busy = measures.agent
        self.live: dict[str, Conv] = {}
        a = scenario.agents
        self.reservations = a.reservations
        self.accept_q = a.accept_s.quantile
        self.reply_q = a.first_reply_s.quantile
        self.acw_q = a.after_chat_s.quantile
        self.reply_k = a.load.reply_per_chat
        self.handle_k = a.load.handle_per_chat
        self.speed = dict(a.speed)
        self.transfer_share = a.transfer_share
        self.patience_q = scenario.buyers.patience_s.quantile
        self.vip_tags = frozenset(scenario.buyers.vip_tags)
        self.send_q = scenario.bot.suggest_send_s.quantile
        self.suggest_q = scenario.bot.suggest_handle_s.quantile
        self.bot_mode = {sid: scenario.bot.mode(shop.platform) for sid, shop in config.shops.items()}
        self.platform = {sid: shop.platform for sid, shop in config.shops.items()}
        self.handle: dict[str, Any] = {}
        self.skills = sorted({s for ag in config.agents.values() for s in ag.skills})
        self.agent_skills = {aid: frozenset(ag.skills) for aid, ag in config.agents.items()}

    def arrive(self, spec: ConvSpec) -> Conv:
        """A buyer's first message: everything about them drawn from a stream keyed by the seed
        and the conversation, so every policy compared meets the same buyers."""
        draws = Draws(self.seed, spec.key)
        buyer = spec.buyer
        vip = buyer is not None and not self.vip_tags.isdisjoint(buyer.tags)
        return Conv(f"{spec.shop_id}:{spec.buyer_id}", spec, draws, self.patience_q(draws.u()),
                    (self.platform.get(spec.shop_id, "other"), vip))

    def _load(self, aid: str | None) -> int:
        """The agent's open chats in the router (this one included): what slows them down."""
        st = self.agents.get(aid) if aid is not None else None
        return max(1, st.load) if st is not None else 1

    def _handle_time(self, conv: Conv, n: int) -> float:
        if conv.mode == "suggest":
            base = self.suggest_q(conv.handle_u)
        else:
            q = self.handle.get(conv.need)
            if q is None:
                q = self.handle[conv.need] = self.s.handle_dist(conv.need).quantile
            base = q(conv.handle_u)
        return base * self.speed.get(conv.agent, 1.0) * (1.0 + self.handle_k * (n - 1))  # type: ignore[arg-type]

    # -- what decisions mean for buyers and agents ------------------------------------------------

    def apply(self, decisions: list[Any], now: float) -> None:
        live = self.live
        measures = self.measures
        for dec in decisions:
            cause = dec.cause
            if cause != "message":
                measures.causes[cause] = measures.causes.get(cause, 0) + 1
            else:
                measures.actions[dec.action] = measures.actions.get(dec.action, 0) + 1
            conv = live.get(dec.conversation_id)
            if conv is None:
                continue
            action = dec.action
            if dec.flags and not conv.mode and conv.replied is None:
                for f in dec.flags:
                    if f.startswith("bot:suggest:"):  # the FAQ answer waits in the agent's composer
                        conv.mode = "suggest"
            if action == "assigned":
                if dec.agent_id != conv.agent:
                    self._assign(conv, dec.agent_id, dec.skill, now)
            elif action == "queued":
                if conv.agent is not None:
                    self.unassign(conv, now)
                    conv.ver += 1
                if conv.need_at is None:
                    self._need(conv, now)
                self._leave(conv)
                skill = dec.skill
                conv.skill = skill
                if conv.qskill != skill:
                    if conv.qskill is not None:
                        self._depth(conv.qskill, -1, now)
                    self._depth(skill, 1, now)
                    conv.qskill = skill
            elif action == "answered":
                conv.answered += 1
                if conv.answered == 1 and conv.need_at is None:
                    mode = self.bot_mode[conv.spec.shop_id]
                    if mode != "settle":
                        # the bot's answer goes to an agent (suggest) or out, and a human follows
                        conv.mode = mode
                        self.push(now, HANDOFF, conv, 0)

    def _need(self, conv: Conv, now: float) -> None:
        """The buyer now waits for a human: from their first message, or from now if the bot kept
        them longer than their patience."""
        conv.need_at = now
        leave = conv.t0 + conv.patience
        conv.leave_at = leave if leave > now else now + conv.patience

    def _leave(self, conv: Conv) -> None:
        """Schedule the buyer's departure only once they could actually run out of patience
        (queued, or the agent would answer too late): most never do, which saves an event."""
        if not conv.leave_set and conv.replied is None:
            conv.leave_set = True
            self.push(conv.leave_at, LEAVE, conv, 0)

    def _assign(self, conv: Conv, aid: str, skill: str | None, now: float) -> None:
        if conv.agent is not None:
            self.unassign(conv, now)
        if conv.qskill is not None:
            self._depth(conv.qskill, -1, now)
            conv.qskill = None
        if conv.need_at is None:
            self._need(conv, now)
        conv.agent = aid
        conv.skill = skill
        conv.ver += 1
        t = self._busy(aid, 1, now)
        if t is not None:
            t[3] += 1
        if self.reservations:
            at = now + self.accept_q(conv.draws.u())
            if at >= conv.leave_at:
                self._leave(conv)
            self.push(at, ACCEPT, conv, conv.ver)
        else:
            self.accepted(conv, now)

    def unassign(self, conv: Conv, now: float) -> None:
        self._busy(conv.agent, -1, now)  # type: ignore[arg-type]
        conv.agent = None

    def accepted(self, conv: Conv, now: float) -> None:
        """The agent opens the chat: first reply and handle time, slower the more chats they
        have open; the chat cannot close before the buyer's last message has been answered."""
        n = self._load(conv.agent)
        u_reply = conv.draws.u()
        busy = 0.0
        if conv.replied is None:
            if conv.mode == "suggest":
                busy = self.send_q(u_reply) * (1.0 + self.reply_k * (n - 1))
            else:
                busy = self.reply_q(u_reply) * (1.0 + self.reply_k * (n - 1))
            if now + busy >= conv.leave_at:
                self._leave(conv)
            self.push(now + busy, REPLY, conv, conv.ver)
        close = now + max(self._handle_time(conv, n), busy + 1.0)
        # the agent answers the buyer's last message before closing, however quick the work was
        last = conv.last_t + self.reply_q(u_reply) * (1.0 + self.reply_k * (n - 1)) + 1.0
        self.push(close if close > last else last, CLOSE, conv, conv.ver)

    def replied(self, conv: Conv, now: float, ver: int) -> None:
        """The agent's first reply; a chat they lack the skill for (or a drawn share of chats) is
        then handed on."""
        conv.replied = now
        if not conv.transferred:
            need = self.needed_skill(conv)
            lacks = need is not None and need not in self.agent_skills.get(conv.agent, ())  # type: ignore[arg-type]
            if lacks or conv.transfer_u < self.transfer_share:
                self.push(now + TRANSFER_DELAY_S, TRANSFER, conv, ver)

    def closed(self, conv: Conv, now: float) -> None:
        """The agent closes the chat; after-chat work keeps the slot taken until it is done."""
        t_agent = self.measures.tally.get(conv.agent)  # type: ignore[arg-type]
        if t_agent is not None:
            t_agent[4] += 1
        self.finish(conv, now, "human", keep_agent=True)
        self.push(now + self.acw_q(conv.acw_u), RELEASE, conv, 0)

    def finish(self, conv: Conv, now: float, outcome: str, keep_agent: bool = False) -> None:
        conv.closed = True
        if conv.agent is not None and not keep_agent:
            self.unassign(conv, now)
        if conv.qskill is not None:
            self._depth(conv.qskill, -1, now)
            conv.qskill = None
        if self.live.get(conv.cid) is conv:
            del self.live[conv.cid]
        if outcome == "abandoned":
            conv.left = now
        self.record(conv, outcome)

    def needed_skill(self, conv: Conv) -> str | None:
        skill = NEEDED_SKILL.get(conv.need)
        return skill if skill in self.skills else None
