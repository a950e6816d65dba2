"""Scenario files for ``fenliu simulate``: who writes, when, about what, and how people behave.

A scenario is TOML validated by msgspec (unknown keys are errors, reported like the config's
``file: key.path: reason``). Every key has a default, so an empty file is a valid scenario: the
config's shops, a weekday-shaped arrival curve and plausible agent behaviour. The synthetic
traffic built from it depends only on the scenario and the seed (``random.Random(seed)``), never
on the policy being simulated; every draw about one conversation (patience, the work it needs,
the agents' delays on it) comes from :class:`Draws` keyed by the seed and the conversation, so
every policy meets exactly the same buyers, in synthetic and recorded mode alike.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import random
import struct
import tomllib
from datetime import date, datetime, time, timedelta
from pathlib import Path
from statistics import NormalDist
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from router.core.config import Config, ConfigError, ConfigErrors, decode_section
from router.core.models import Buyer, CloseEvent, Message, Order

NonNeg = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Share = Annotated[float, msgspec.Meta(ge=0, le=1)]
HHMM = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-4]):[0-5]\d$")]

_inv_cdf = NormalDist().inv_cdf


class _Struct(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class Fixed(_Struct, tag="fixed", tag_field="dist"):
    """Always ``value``."""

    value: NonNeg

    def quantile(self, u: float) -> float:
        return self.value

    def sample(self, rng: random.Random) -> float:
        return self.value


class Exponential(_Struct, tag="exponential", tag_field="dist"):
    """Memoryless, for gaps between independent events."""

    mean: Positive

    def quantile(self, u: float) -> float:
        return -self.mean * math.log1p(-u)

    def sample(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean)


class Lognormal(_Struct, tag="lognormal", tag_field="dist"):
    """Right-skewed durations (handle times, patience): ``median`` and ``sigma`` of ``ln x``,
    optionally capped at ``max``."""

    median: Positive
    sigma: NonNeg = 0.5
    max: Positive | None = None

    def quantile(self, u: float) -> float:
        x = self.median * math.exp(self.sigma * _inv_cdf(min(max(u, 1e-12), 1 - 1e-12)))
        return x if self.max is None else min(x, self.max)

    def sample(self, rng: random.Random) -> float:
        x = self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0))
        return x if self.max is None else min(x, self.max)


class Empirical(_Struct, tag="empirical", tag_field="dist"):
    """Measured values (e.g. exported handle times), drawn with equal probability."""

    values: Annotated[tuple[NonNeg, ...], msgspec.Meta(min_length=1)]

    def quantile(self, u: float) -> float:
        ordered = _sorted(self.values)
        return ordered[min(int(u * len(ordered)), len(ordered) - 1)]

    def sample(self, rng: random.Random) -> float:
        return self.values[int(rng.random() * len(self.values))]


@functools.lru_cache(maxsize=64)
def _sorted(values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(sorted(values))


Dist = Fixed | Exponential | Lognormal | Empirical


_EIGHT_U64 = struct.Struct("<8Q")
_TWO_M53 = 1.0 / 9007199254740992.0


class Draws:
    """Common random numbers: the uniforms of one conversation (or one agent), a pure function of
    the seed and its key. A policy that assigns a chat twice draws further along the same stream,
    so the first assignment's delays are the same under every policy, and no policy's choices can
    shift another conversation's draws (a shared ``random.Random`` would)."""

    __slots__ = ("_base", "_buf", "_i", "_block")

    def __init__(self, seed: int, key: str) -> None:
        self._base = f"{seed}|{key}|".encode()
        self._block = 0
        self._buf: list[float] = []
        self._i = 0

    def u(self) -> float:
        """The next uniform in [0, 1): 53 bits of each 64 of a BLAKE2b block."""
        i = self._i
        if i >= len(self._buf):
            digest = hashlib.blake2b(self._base + str(self._block).encode(), digest_size=64).digest()
            self._block += 1
            self._buf = [(x >> 11) * _TWO_M53 for x in _EIGHT_U64.unpack(digest)]
            i = 0
        self._i = i + 1
        return self._buf[i]


class Burst(_Struct):
    """A sale-day rush (大促): arrivals multiplied by ``multiplier`` between local ``start`` and
    ``end`` of every simulated day."""

    start: HHMM
    end: HHMM
    multiplier: Positive = 3.0


DEFAULT_PROFILE = (
    0.6, 0.35, 0.2, 0.12, 0.1, 0.12, 0.25, 0.5, 0.9, 1.3, 1.5, 1.4,
    1.2, 1.3, 1.4, 1.4, 1.3, 1.2, 1.2, 1.4, 1.7, 1.8, 1.5, 1.0,
)


class Traffic(_Struct):
    shops: tuple[str, ...] = ()
    conversations_per_shop: NonNeg = 400.0
    shop_weights: dict[str, NonNeg] = {}
    hourly_profile: tuple[NonNeg, ...] = DEFAULT_PROFILE
    bursts: tuple[Burst, ...] = ()
    mix: dict[str, Share] = msgspec.field(
        default_factory=lambda: {"presale": 0.5, "logistics": 0.22, "aftersale": 0.2, "vip": 0.08})
    texts: dict[str, tuple[str, ...]] = {}
    messages: Dist = Empirical(values=(1, 2, 2, 3, 3, 3, 4, 4, 5, 6, 8))
    message_gap_s: Dist = Exponential(mean=25.0)


class Buyers(_Struct):
    patience_s: Dist = Lognormal(median=150.0, sigma=0.8)
    bot_close_after_s: NonNeg = 120.0
    vip_tags: tuple[str, ...] = ("vip",)
    #: recorded traffic: a buyer's messages further apart than this (or split by a recorded
    #: ``close`` line) are two conversations
    session_gap_s: Positive = 1800.0


class Load(_Struct):
    """How open chats slow a person down. With ``n`` chats open (this one included) the first
    reply takes ``× (1 + reply_per_chat·(n−1))`` and the handle time ``× (1 + handle_per_chat·(n−1))``,
    so ``n`` chats give ``n / (1 + handle_per_chat·(n−1))`` times the throughput of one: 2.5× at
    5 open with the default, never more than ``1 / handle_per_chat`` (4×)."""

    reply_per_chat: NonNeg = 0.5
    handle_per_chat: NonNeg = 0.25


class Breaks(_Struct):
    """小休: an agent on shift steps away (status ``break``: no new chats, open ones stay) every
    ``every_s`` on average, for ``length_s``."""

    enabled: bool = True
    every_s: Dist = Exponential(mean=7200.0)
    length_s: Dist = Lognormal(median=600.0, sigma=0.4, max=1800.0)


class Agents(_Struct):
    reservations: bool = True
    accept_s: Dist = Lognormal(median=4.0, sigma=0.9)
    first_reply_s: Dist = Lognormal(median=12.0, sigma=0.6)
    speed: dict[str, Positive] = {}
    #: chats the agent escalates (to another agent of the skill the chat needs) although they
    #: could handle it; a chat whose agent lacks the needed skill is always transferred to it
    transfer_share: Share = 0.02
    #: 话后处理: notes and tags after a chat closes; the slot stays taken meanwhile
    after_chat_s: Dist = Lognormal(median=15.0, sigma=0.5, max=120.0)
    load: Load = Load()
    breaks: Breaks = Breaks()


BotMode = Literal["settle", "suggest", "answer_and_handoff"]


class Bot(_Struct):
    """What a bot answer means, per platform (``default`` for the rest), when the router's own
    decision does not say: ``settle`` (the bot's answer ends the chat; on Pinduoduo a miss),
    ``suggest`` (the answer goes to an agent's composer and the chat to a human: one click sends
    it, a human reply) or ``answer_and_handoff`` (the bot answers and a human still follows)."""

    modes: dict[str, BotMode] = {}
    suggest_send_s: Dist = Lognormal(median=5.0, sigma=0.5)
    suggest_handle_s: Dist = Lognormal(median=40.0, sigma=0.5)

    def mode(self, platform: str) -> str:
        return self.modes.get(platform) or self.modes.get("default") or "settle"


DEFAULT_HANDLE: dict[str, Dist] = {
    "presale": Lognormal(median=180.0, sigma=0.6),
    "logistics": Lognormal(median=120.0, sigma=0.5),
    "aftersale": Lognormal(median=420.0, sigma=0.7),
    "vip": Lognormal(median=300.0, sigma=0.6),
    "default": Lognormal(median=240.0, sigma=0.6),
}


class Metrics(_Struct):
    """Unset reply settings come from the configuration (``defaults.reply_within_s`` and
    ``defaults.reply_window``), so a simulation judges a policy by the rule the service uses."""

    reply_target_s: Positive | None = None
    window_start: HHMM | None = None
    window_end: HHMM | None = None
    bucket_s: Annotated[float, msgspec.Meta(ge=10)] = 300.0


class Scenario(_Struct):
    name: str = "scenario"
    seed: int = 1
    start: date = date(2025, 11, 11)
    duration_h: Annotated[float, msgspec.Meta(gt=0, le=24 * 31)] = 24.0
    timezone: str = "Asia/Shanghai"
    traffic: Traffic = Traffic()
    buyers: Buyers = Buyers()
    agents: Agents = Agents()
    bot: Bot = Bot()
    handle_s: dict[str, Dist] = {}
    metrics: Metrics = Metrics()

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def start_ts(self) -> float:
        return datetime.combine(self.start, time(), self.tz).timestamp()

    def handle_dist(self, need: str | None) -> Dist:
        """Handle time by what the buyer needs (the kind of chat), never by the router's guess."""
        skill = need
        table = self.handle_s
        key = skill or "default"
        return table.get(key) or table.get("default") or DEFAULT_HANDLE.get(key) or DEFAULT_HANDLE["default"]


TEXTS: dict[str, tuple[str, ...]] = {
    "presale": (
        "这件羽绒服有XL码吗", "请问这款有黑色的吗?", "160斤穿多大码合适", "今天下单有优惠吗",
        "买两件可以便宜点吗", "这个芒果甜不甜", "这款手机支持5G吗", "尺码偏大还是偏小?",
        "下单送赠品吗", "面料是纯棉的吗", "有现货吗,想买给我妈", "这个和上一代有什么区别",
    ),
    "logistics": (
        "我的快递到哪了", "什么时候发货?", "物流三天没更新了", "单号是多少,查不到物流",
        "能发顺丰吗", "快递显示签收了但我没收到", "可以改一下收货地址吗", "发货太慢了,帮我催一下",
    ),
    "aftersale": (
        "我要退款,质量太差了", "收到的衣服有破洞,怎么退货", "尺码不合适想换货",
        "申请了售后一直没人处理", "少发了一件,怎么补发", "商品和描述不符,要求退款",
        "退货运费谁出?", "坏了一个,能赔吗",
    ),
    "vip": (
        "我是老客户了,这次买的有点问题想换一下", "会员价是多少,想再订十件", "帮我看看订单,着急用",
        "上次买的很好,这次能优先发货吗", "我要退款,包装压坏了", "还有别的颜色吗,想送人",
    ),
}

_ORDERS = {
    "logistics": Order(order_id="sim-order", status="shipped", amount=199.0),
    "aftersale": Order(order_id="sim-order", status="delivered", amount=89.0),
}


class ConvSpec(msgspec.Struct, frozen=True, array_like=True):
    """One conversation as the buyer lives it: when each message comes and what it says, and
    what they need (``category``: presale, logistics, aftersale, vip). Synthetic ones carry texts;
    a recorded one carries its recorded messages (``recorded``) instead."""

    index: int
    shop_id: str
    buyer_id: str
    category: str
    times: tuple[float, ...]
    texts: tuple[str, ...]
    buyer: Buyer | None
    order: Order | None
    recorded: tuple[Any, ...] = ()

    @property
    def key(self) -> str:
        """The conversation's key for :class:`Draws`: unique within a traffic."""
        return f"{self.shop_id}:{self.buyer_id}:{self.index}"


#: The skill each kind of chat needs, for transfers (vip: whoever serves VIPs can handle it).
NEEDED_SKILL = {"presale": "presale", "logistics": "logistics", "aftersale": "aftersale"}

_AFTERSALE_WORDS = ("退款", "退货", "退钱", "换货", "破", "坏", "质量", "售后", "补发", "少发", "赔",
                    "不符", "压坏", "烂")
_LOGISTICS_WORDS = ("快递", "物流", "发货", "单号", "到哪", "签收", "收货地址", "顺丰", "催")


def classify_need(texts: Any, order: Order | None, buyer: Buyer | None, vip_tags: tuple[str, ...]) -> str:
    """What a recorded buyer needs, by a fixed rule that does not depend on the configuration
    (so changing the router's skill rules cannot change the simulated workload): VIP tags,
    then after-sale words or a delivered order, then logistics words or a shipped order."""
    if buyer is not None and any(t in vip_tags for t in buyer.tags):
        return "vip"
    joined = " ".join(texts)
    status = order.status if order is not None else None
    if status in ("delivered", "refunding") or any(w in joined for w in _AFTERSALE_WORDS):
        return "aftersale"
    if status == "shipped" or any(w in joined for w in _LOGISTICS_WORDS):
        return "logistics"
    return "presale"


def load_scenario(path: str | Path | None, config: Config | None = None) -> Scenario:
    """Read and validate a scenario file (``None``: all defaults). Raises
    :class:`router.core.config.ConfigErrors` with ``file: key.path: reason`` lines."""
    if path is None:
        scenario = Scenario()
        file = Path("<defaults>")
    else:
        file = Path(path)
        try:
            with file.open("rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigErrors([ConfigError(file, "", "file not found")]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigErrors([ConfigError(file, "", f"TOML syntax error: {exc}")]) from None
        except OSError as exc:
            raise ConfigErrors([ConfigError(file, "", f"cannot read: {exc.strerror}")]) from None
        errors: list[ConfigError] = []
        scenario = decode_section(file, raw, Scenario, errors)
        if scenario is None:
            for e in errors:
                e.key = _name_dict_key(file, raw, e.key)
                if e.key.endswith(".dist") and e.reason.startswith("invalid value"):
                    e.reason = f"expected one of fixed, exponential, lognormal, empirical; got {e.reason.split()[-1]}"
            raise ConfigErrors(errors)
    errors = check_scenario(file, scenario, config)
    if errors:
        raise ConfigErrors(errors)
    return scenario


def _name_dict_key(file: Path, raw: dict[str, Any], key: str) -> str:
    """msgspec names a bad dict entry ``a.b[...].c``; find which entry it is by decoding the
    dict's entries one at a time."""
    head, sep, tail = key.partition("[...]")
    if not sep:
        return key
    parts = head.split(".")
    parent: Any = raw
    for part in parts[:-1]:
        parent = parent.get(part) if isinstance(parent, dict) else None
    entries = parent.get(parts[-1]) if isinstance(parent, dict) else None
    if not isinstance(entries, dict):
        return key
    for name, value in entries.items():
        parent[parts[-1]] = {name: value}
        try:
            if decode_section(file, raw, Scenario, []) is None:
                return f"{head}.{name}{tail}"
        finally:
            parent[parts[-1]] = entries
    return key


def check_scenario(file: Path, s: Scenario, config: Config | None) -> list[ConfigError]:
    """What msgspec cannot see: cross-references to the config and shapes of lists."""
    errors: list[ConfigError] = []

    def err(key: str, reason: str) -> None:
        errors.append(ConfigError(file, key, reason))

    try:
        ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        err("timezone", f"unknown time zone {s.timezone!r}")
    t = s.traffic
    if len(t.hourly_profile) != 24:
        err("traffic.hourly_profile", f"expected 24 values (one per hour), got {len(t.hourly_profile)}")
    elif not any(t.hourly_profile):
        err("traffic.hourly_profile", "at least one hour needs a rate above 0")
    if not any(t.mix.values()):
        err("traffic.mix", "at least one category needs a share above 0")
    for cat in t.mix:
        if cat not in TEXTS and not t.texts.get(cat):
            err(f"traffic.mix.{cat}", f"no texts for category {cat!r}: add traffic.texts.{cat}")
    for cat, texts in t.texts.items():
        if not texts:
            err(f"traffic.texts.{cat}", "needs at least one text")
    for i, b in enumerate(t.bursts):
        if b.start == b.end:
            err(f"traffic.bursts[{i}]", "start and end are the same time")
    platforms = ("pinduoduo", "taobao", "tmall", "jd", "douyin", "other", "default")
    for plat in s.bot.modes:
        if plat not in platforms:
            err(f"bot.modes.{plat}", f"expected a platform ({', '.join(map(repr, platforms))}); got {plat!r}")
    if config is not None:
        for i, sid in enumerate(t.shops):
            if sid not in config.shops:
                err(f"traffic.shops[{i}]", f"unknown shop {sid!r}")
        for sid in t.shop_weights:
            if sid not in config.shops:
                err(f"traffic.shop_weights.{sid}", f"unknown shop {sid!r}")
        for aid in s.agents.speed:
            if aid not in config.agents:
                err(f"agents.speed.{aid}", f"unknown agent {aid!r}")
        if not config.shops:
            err("traffic.shops", "the configuration has no shops")
    return errors


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def daily_windows(s: Scenario, start: str, end: str, t0: float, t1: float) -> list[tuple[float, float]]:
    """``[a, b)`` epoch intervals of the local daily window ``start``–``end`` covering
    ``[t0, t1]`` (an ``end`` at or before ``start`` runs past midnight)."""
    tz = s.tz
    a, b = _minutes(start), _minutes(end)
    if b <= a:
        b += 24 * 60
    day = datetime.fromtimestamp(t0, tz).date() - timedelta(days=1)
    last = datetime.fromtimestamp(t1, tz).date()
    out = []
    while day <= last:
        midnight = datetime.combine(day, time(), tz)
        out.append(((midnight + timedelta(minutes=a)).timestamp(), (midnight + timedelta(minutes=b)).timestamp()))
        day += timedelta(days=1)
    return out


def in_windows(windows: list[tuple[float, float]], starts: list[float], ts: float) -> bool:
    i = bisect.bisect_right(starts, ts) - 1
    return i >= 0 and ts < windows[i][1]


def _rate_segments(s: Scenario, total_per_day: float) -> list[tuple[float, float, float]]:
    """Piecewise-constant arrival rate (per second) over the horizon: ``(from, to, rate)``."""
    t0 = s.start_ts
    t1 = t0 + s.duration_h * 3600
    tz = s.tz
    profile = s.traffic.hourly_profile
    mean = sum(profile) / 24
    bursts = [(w, b.multiplier) for b in s.traffic.bursts for w in daily_windows(s, b.start, b.end, t0, t1)]
    cuts = {t0, t1}
    hour = datetime.fromtimestamp(t0, tz).replace(minute=0, second=0, microsecond=0)
    while hour.timestamp() < t1:
        hour = (hour + timedelta(hours=1)).astimezone(tz)
        cuts.add(hour.timestamp())
    for (a, b), _ in bursts:
        cuts.update((a, b))
    points = sorted(c for c in cuts if t0 <= c <= t1)
    segs = []
    for a, b in zip(points, points[1:]):
        mid = (a + b) / 2
        h = datetime.fromtimestamp(mid, tz).hour
        rate = total_per_day / 86400 * profile[h] / mean
        for (ba, bb), mult in bursts:
            if ba <= mid < bb:
                rate *= mult
        segs.append((a, b, rate))
    return segs


def generate(s: Scenario, config: Config, seed: int) -> list[ConvSpec]:
    """The synthetic conversations of a scenario, in arrival order. Depends only on the scenario,
    the config's shop list and ``seed``."""
    rng = random.Random(seed)
    t = s.traffic
    shops = list(t.shops) or list(config.shops)
    weights = [t.shop_weights.get(sid, 1.0) for sid in shops]
    total_w = sum(weights)
    if total_w <= 0:
        return []
    cum_w = []
    acc = 0.0
    for w in weights:
        acc += w
        cum_w.append(acc)
    cats = [c for c, share in t.mix.items() if share > 0]
    cum_c = []
    acc = 0.0
    for c in cats:
        acc += t.mix[c]
        cum_c.append(acc)
    texts = {c: t.texts.get(c) or TEXTS[c] for c in cats}
    vip_buyer = Buyer(tags=tuple(s.buyers.vip_tags), level=5, lifetime_spend=12800.0)
    per_day = t.conversations_per_shop * len(shops)
    random_ = rng.random
    msgs = t.messages.sample
    gap = t.message_gap_s.sample
    out: list[ConvSpec] = []
    n = 0
    for a, b, rate in _rate_segments(s, per_day):
        if rate <= 0:
            continue
        now = a
        while True:
            now += -math.log1p(-random_()) / rate
            if now >= b:
                break
            shop = shops[bisect.bisect_left(cum_w, random_() * total_w)]
            cat = cats[min(bisect.bisect_left(cum_c, random_() * acc), len(cats) - 1)]
            count = max(1, round(msgs(rng)))
            times = [now]
            for _ in range(count - 1):
                times.append(times[-1] + gap(rng))
            pool = texts[cat]
            said = tuple(pool[int(random_() * len(pool))] for _ in range(count))
            n += 1
            out.append(ConvSpec(
                n, shop, f"sb-{n}", cat, tuple(times), said,
                vip_buyer if cat == "vip" else None, _ORDERS.get(cat),
            ))
    return out


def write_jsonl(convs: list[ConvSpec], path: Path) -> int:
    """Write synthetic conversations as a recorded day (JSONL as ``fenliu route`` and ``fenliu
    simulate --traffic`` take): every buyer message with its time, buyer and order, and a
    ``close`` line a minute after each conversation's last message, so the conversations cut from
    the file are exactly these. Returns the number of conversations."""
    enc = msgspec.json.Encoder()
    lines: list[tuple[float, int, bytes]] = []
    for c in convs:
        for k, (ts, text) in enumerate(zip(c.times, c.texts)):
            msg = Message(c.shop_id, f"sm-{c.index}-{k}", c.buyer_id, text, "text", round(ts, 3), c.buyer, c.order)
            lines.append((msg.ts, 0, enc.encode(msg)))  # type: ignore[arg-type]
        close = CloseEvent(f"{c.shop_id}:{c.buyer_id}", round(c.times[-1] + 60.0, 3))
        lines.append((close.ts, 1, enc.encode(close)))  # type: ignore[arg-type]
    lines.sort(key=lambda x: (x[0], x[1]))
    with path.open("wb") as f:
        for _, _, data in lines:
            f.write(data + b"\n")
    return len(convs)
