"""Simulated traffic for demos and load: Chinese buyer chats for any number of shops and buyers,
and simulated agents that accept and answer.

- :class:`Traffic` makes messages: 售前 (presale), 物流 (logistics), 售后 (after-sales) and VIP
  chats, each buyer a short conversation of follow-ups, at a configurable rate with bursts (a
  sale-day peak multiplies the rate for a while). Deterministic for a seed.
- :class:`Simulation` posts that traffic to a running server over real signed HTTP, and runs
  simulated agents in-process as sessions of the service (they receive the same frames a
  WebSocket agent gets, accept after a human-like delay, reply, and close a chat the buyer has
  left quiet after their answer, as people do). ``speed`` runs the whole demo faster than life
  (traffic, agents and their pauses alike), for tests of its steady state.
- :class:`SimulatorAdapter` is the outbound side in ``--simulate``: replies are acknowledged at
  once (and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from adapters import Adapter, OutboundReply
from router.core.models import AcceptEvent, CloseEvent, WsAssigned, WsMessage

if TYPE_CHECKING:
    from router.service.service import Service

log = structlog.get_logger("fenliu.simulator")

NICKS = ("小王", "阿杰", "琳琳", "大熊", "糖糖", "老李", "木子", "可乐", "小鱼", "晨晨", "豆豆", "阿May")
GOODS = ("羽绒服", "加绒卫衣", "雪地靴", "红富士苹果", "赣南脐橙", "蓝牙耳机", "充电宝", "机械键盘", "保温杯", "四件套")

SCRIPTS: dict[str, list[list[str]]] = {
    "presale": [
        ["在吗?", "这件{goods}有XL码吗", "我身高175体重140斤穿什么码", "好的,那我拍了"],
        ["{goods}还有货吗?", "今天下单什么时候发货", "能便宜点吗", "有没有优惠券"],
        ["你好,这个{goods}是正品吗", "质量怎么样,会不会掉色", "支持七天无理由吗"],
    ],
    "logistics": [
        ["我的快递到哪了", "订单号{order_id},三天了还没动", "能帮我催一下吗"],
        ["怎么还没发货啊", "什么时候能到", "可以改地址吗,我搬家了"],
        ["物流显示签收了但是我没收到", "快递员电话打不通", "麻烦帮我查一下"],
    ],
    "aftersale": [
        ["我要退款,{goods}质量太差了", "收到就破了个洞", "图片已经发你了", "什么时候能退"],
        ["尺码不合适,能换货吗", "换大一码", "运费谁出"],
        ["退货寄回去好几天了,退款还没到", "退款什么时候到账"],
    ],
    "vip": [
        ["我是老客户了,这次的{goods}有问题", "上次买的也是你们家的", "希望尽快处理"],
        ["帮我留两件{goods},晚上付款", "老规矩发顺丰"],
    ],
}

ANSWERS = {
    "presale": ["亲,有货的哦,建议拍L码~", "今天16点前下单当天发货呢", "亲,店铺首页可以领券哦"],
    "logistics": ["亲,已经帮您催件了,请耐心等待哦", "物流这边显示明天派送呢", "地址已帮您备注修改"],
    "aftersale": ["非常抱歉给您带来不便,已为您登记退款", "亲,支持换货的,请在订单里申请", "退款1-3个工作日原路退回"],
    "vip": ["感谢您一直以来的支持,马上为您优先处理", "已经为您预留好了"],
}


@dataclass
class _Buyer:
    shop_id: str
    buyer_id: str
    nick: str
    tags: tuple[str, ...]
    level: int
    spend: float


@dataclass
class Traffic:
    """A deterministic stream of buyer messages for ``shops``."""

    shops: list[str]
    buyers: int = 200
    seed: int = 7
    mix: dict[str, float] = field(default_factory=lambda: {"presale": 0.45, "logistics": 0.25, "aftersale": 0.2, "vip": 0.1})

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._n = 0
        self._active: list[tuple[_Buyer, str, list[str], int, dict[str, Any]]] = []
        self._pool = [self._buyer(s, i) for s in self.shops for i in range(self.buyers)]

    def _buyer(self, shop: str, i: int) -> _Buyer:
        rng = self.rng
        vip = rng.random() < 0.1
        tags = ("vip",) if vip else ()
        if vip and rng.random() < 0.3:
            tags = ("vip", "svip")
        return _Buyer(shop, f"b-{i:05d}", rng.choice(NICKS), tags, rng.randint(4, 6) if vip else rng.randint(0, 3),
                      round(rng.uniform(3000, 20000) if vip else rng.uniform(0, 800), 2))

    def _start(self) -> None:
        rng = self.rng
        buyer = rng.choice(self._pool)
        kinds, weights = zip(*self.mix.items())
        kind = rng.choices(kinds, weights)[0]
        if kind == "vip" and "vip" not in buyer.tags:
            kind = "presale"
        script = rng.choice(SCRIPTS[kind])
        order_id = f"{rng.randint(230000, 251231)}-{rng.randint(10, 99999)}"
        status = {"logistics": "shipped", "aftersale": "delivered"}.get(kind, "unpaid")
        order = {"order_id": order_id, "status": status, "amount": round(rng.uniform(19, 999), 1),
                 "goods": rng.choice(GOODS)}
        self._active.append((buyer, kind, script, 0, order))

    def next(self, ts: float | None = None) -> dict[str, Any]:
        """One message as a JSON-able dict."""
        rng = self.rng
        if not self._active or (len(self._active) < 50 and rng.random() < 0.35):
            self._start()
        i = rng.randrange(len(self._active))
        buyer, kind, script, step, order = self._active[i]
        text = script[step].format(goods=order["goods"], order_id=order["order_id"])
        if step + 1 >= len(script):
            self._active.pop(i)
        else:
            self._active[i] = (buyer, kind, script, step + 1, order)
        self._n += 1
        msg: dict[str, Any] = {
            "shop_id": buyer.shop_id, "msg_id": f"sim-{self.seed}-{self._n:08d}", "buyer_id": buyer.buyer_id,
            "text": text, "ts": ts if ts is not None else time.time(),
            "buyer": {"nick": buyer.nick, "tags": list(buyer.tags), "level": buyer.level, "lifetime_spend": buyer.spend},
        }
        if kind != "presale" or rng.random() < 0.3:
            msg["order"] = order
        return msg

    def stream(self, count: int, start: float = 1763880000.0, rate: float = 5.0) -> Iterator[dict[str, Any]]:
        """``count`` messages on a virtual clock at ``rate`` per second (Poisson arrivals)."""
        ts = start
        for _ in range(count):
            ts += self.rng.expovariate(rate)
            yield self.next(round(ts, 3))


def rate_at(t: float, base: float, peak_every_s: float = 120.0, peak_for_s: float = 20.0, peak_factor: float = 6.0) -> float:
    """Messages per second at ``t`` seconds into the run: ``base``, with a sale-day burst of
    ``peak_factor``× for ``peak_for_s`` every ``peak_every_s``."""
    return base * peak_factor if (t % peak_every_s) >= peak_every_s - peak_for_s else base


class SimulatorAdapter(Adapter):
    """Outbound in ``--simulate``: the simulated buyer "reads" the reply at once."""

    name = "simulator"
    delivered = 0

    async def send(self, reply: OutboundReply) -> None:
        type(self).delivered += 1


class SimAgent:
    """A simulated agent attached to the service like a WebSocket session."""

    def __init__(self, service: Service, agent_id: str, rng: random.Random, speed: float = 1.0) -> None:
        self.service = service
        self.agent_id = agent_id
        self.rng = rng
        self.speed = speed
        self.inbox: asyncio.Queue[msgspec.Struct] = asyncio.Queue()
        self.answered: dict[str, int] = {}
        self.task: asyncio.Task | None = None
        self.closed = False

    def deliver(self, frame: msgspec.Struct) -> None:
        self.inbox.put_nowait(frame)

    async def close(self, code: int, message: bytes) -> None:
        """A person logged in as this agent (its WebSocket replaces this session): stop acting."""
        self.closed = True

    async def _later(self, low: float, high: float) -> None:
        await asyncio.sleep(self.rng.uniform(low, high) / self.speed)
        if self.closed:
            raise asyncio.CancelledError

    async def run(self) -> None:
        await self.service.attach(self)
        while True:
            frame = await self.inbox.get()
            asyncio.get_running_loop().create_task(self._act(frame))

    async def _act(self, frame: msgspec.Struct) -> None:
        svc = self.service
        with contextlib.suppress(Exception):
            if isinstance(frame, WsAssigned):
                await self._later(0.5, 4.0)
                if frame.state == "reserved":
                    await svc.event(AcceptEvent(frame.conversation_id, self.agent_id))
                await self._answer(frame.conversation_id, frame.skill or "presale")
            elif isinstance(frame, WsMessage):
                await self._later(1.0, 6.0)
                conv = svc.router.dispatcher.conversations.get(frame.conversation_id)
                if conv is not None and conv.agent_id == self.agent_id:
                    await self._answer(frame.conversation_id, conv.skill or "presale")

    async def _answer(self, cid: str, skill: str) -> None:
        svc = self.service
        answers = ANSWERS.get(skill, ANSWERS["presale"])
        await svc.reply(self.agent_id, cid, self.rng.choice(answers))
        n = self.answered[cid] = self.answered.get(cid, 0) + 1
        conv = svc.router.dispatcher.conversations.get(cid)
        seen = conv.messages if conv is not None else 0
        # A person ends a chat once the buyer is done: at once after a few answers sometimes,
        # otherwise when the buyer has stayed quiet a while after the answer.
        if n >= 3 or self.rng.random() < 0.2:
            await self._later(2.0, 8.0)
        else:
            await self._later(8.0, 25.0)
        conv = svc.router.dispatcher.conversations.get(cid)
        if conv is not None and conv.agent_id == self.agent_id and (n >= 3 or conv.messages == seen):
            await svc.event(CloseEvent(cid))
            self.answered.pop(cid, None)


class Simulation:
    """Buyers over signed HTTP plus in-process agents, against a running server."""

    def __init__(self, service: Service, url: str, rate: float = 2.0, buyers: int = 200, seed: int | None = None,
                 agents: bool = True, speed: float = 1.0) -> None:
        self.service = service
        self.speed = speed
        self.url = url
        self.rate = rate
        self.buyers = buyers
        self.seed = seed if seed is not None else int(time.time())
        self.with_agents = agents
        self.sent = 0
        self.refused = 0
        self._tasks: list[asyncio.Task] = []
        self._agents: list[SimAgent] = []

    def describe(self) -> str:
        return (f"{len(self.service.config.shops)} shops × {self.buyers} buyers, ~{self.rate:g} msg/s with 6× sale-day "
                f"bursts; {len(self.service.config.agents) if self.with_agents else 0} simulated agents")

    def start(self) -> None:
        rng = random.Random(self.seed)
        if self.with_agents:
            for aid in sorted(self.service.config.agents):
                agent = SimAgent(self.service, aid, random.Random(rng.random()), speed=self.speed)
                self._agents.append(agent)
                self._tasks.append(asyncio.create_task(agent.run()))
        self._tasks.append(asyncio.create_task(self._buyers()))

    async def _buyers(self) -> None:
        import aiohttp

        from router.core.signing import SIGNATURE_HEADER, sign

        traffic = Traffic(sorted(self.service.config.shops), self.buyers, self.seed)
        t0 = time.monotonic()
        encode = msgspec.json.encode
        in_flight = asyncio.Semaphore(64)  # buyers write at once; a slow answer must not slow the others

        async def post(http: aiohttp.ClientSession, url: str, body: bytes, signature: str) -> None:
            try:
                async with http.post(url, data=body, headers={SIGNATURE_HEADER: signature,
                                                              "Content-Type": "application/json"}) as resp:
                    await resp.read()
                    if resp.status == 202:
                        self.sent += 1
                    else:
                        self.refused += 1
            except aiohttp.ClientError as exc:
                log.warning("simulator_post_failed", error=str(exc))
                await asyncio.sleep(1.0)
            finally:
                in_flight.release()

        async with aiohttp.ClientSession() as http:
            posts: set[asyncio.Task] = set()
            try:
                due = t0
                while True:  # arrivals on their own clock: a late loop catches up rather than thinning the traffic
                    due += traffic.rng.expovariate(rate_at((due - t0) * self.speed, self.rate) * self.speed)
                    wait = due - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    msg = traffic.next()
                    shop = self.service.config.shops.get(msg["shop_id"])
                    if shop is None or shop.secret is None:
                        continue
                    body = encode(msg)
                    await in_flight.acquire()
                    task = asyncio.create_task(post(http, f"{self.url}/v1/shops/{shop.id}/messages", body,
                                                    sign(shop.secret, body)))
                    posts.add(task)
                    task.add_done_callback(posts.discard)
            finally:
                for task in list(posts):
                    task.cancel()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for a in self._agents:
            self.service.detach(a)
