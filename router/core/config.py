"""The configuration folder (``config/``), validated by msgspec.

Every problem becomes a :class:`ConfigError` naming the file and the key path, e.g.
``config/policies/default.toml: dispatch.strategy: expected one of round_robin, least_load,
weighted; got "roundrobin"``. Loading collects all errors it can find rather than stopping at the
first, so ``fenliu check`` shows everything to fix in one run.

Policy files are decoded into a struct type built at load time from ``dispatch`` plus the
sections plugins declare (``fenliu_policy_sections``), so a plugin's keys are validated exactly
like the core's.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
import zoneinfo
from collections.abc import Mapping
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from router.core.errors import ConfigError, ConfigErrors
from router.core.i18n import _, toml_reason, validation_reason
from router.core.plugins import PluginsConfig, PluginSet
from router.core.schedule import Schedule, Window


Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Platform = Literal["pinduoduo", "taobao", "tmall", "jd", "douyin", "other"]
#: A duration in seconds: positive and at most a year, so a slip like ``1e300`` is an error now
#: rather than an overflow in a timer or a date later.
YEAR_S = 366 * 24 * 3600
Seconds = Annotated[float, msgspec.Meta(gt=0, le=YEAR_S)]
HttpUrl = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/]+")]
RedisUrl = Annotated[str, msgspec.Meta(pattern=r"^(redis|rediss|unix)://")]
PostgresUrl = Annotated[str, msgspec.Meta(pattern=r"^(|postgres|postgresql)(://.*)?$")]


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_timezone(name: str) -> str:
    """Raise ``ValueError`` unless ``name`` is an IANA time zone. Checked against the list rather
    than by opening it: ``ZoneInfo("Asia")`` raises ``IsADirectoryError``, not a clean error."""
    if name not in _zones():
        close = difflib.get_close_matches(name, _zones(), n=1)
        raise ValueError(_("unknown time zone {name!r} (did you mean {close!r}?)", name=name, close=close[0]) if close
                         else _("unknown time zone {name!r} (expected an IANA name like 'Asia/Shanghai')", name=name))
    return name


class Struct(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for config tables: unknown keys are errors."""


class ServerConfig(Struct):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1 << 20
    max_batch: Annotated[int, msgspec.Meta(ge=1)] = 500
    ingest_queue_max: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    dedupe_window: Annotated[int, msgspec.Meta(ge=1)] = 1_000_000
    reconnect_grace_s: Annotated[float, msgspec.Meta(ge=0, le=YEAR_S)] = 30.0
    token_ttl_s: Seconds = 12 * 3600
    watch_config: bool = True
    #: The environment variable holding the bearer token ``GET /metrics`` asks for (unset: open).
    metrics_token_env: str | None = None
    #: Password checks (argon2) run in this many threads, never on the event loop nor in a store
    #: transaction; past ``login_queue_max`` waiting checks a login gets 429 ``login_busy``.
    login_workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    login_queue_max: Annotated[int, msgspec.Meta(ge=0)] = 8
    #: Failed logins per account name and per client address before a lockout, its first length
    #: (doubling with each further lockout) and its cap (docs/security.md, "Logins and lockouts").
    login_max_failures: Annotated[int, msgspec.Meta(ge=1)] = 5
    login_lockout_s: Seconds = 60.0
    login_lockout_max_s: Seconds = 3600.0
    #: Account names and client addresses whose failures are remembered, each (least recently used dropped).
    login_track_max: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    #: Seconds a client has to send a request's whole head (request line and headers), from the
    #: connection's start or a request's first byte; slower ones get 408 and are closed (slowloris).
    header_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    #: The language of messages a person reads (refusals, WebSocket results) when the request's
    #: ``Accept-Language`` names none supported and ``FENLIU_LANG`` is unset (router/core/i18n.py).
    lang: Literal["zh-CN", "en"] = "zh-CN"


class StorageConfig(Struct):
    backend: Literal["sqlite", "redis"] = "sqlite"
    path: str = "var/fenliu.db"
    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "fenliu"
    shards: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 8
    #: Journal entries between snapshots of the routing state (0: none); a restart replays
    #: only the entries after the newest one (router/storage/snapshot.py).
    snapshot_every: Annotated[int, msgspec.Meta(ge=0)] = 100_000
    #: Where accounts, profiles, notes, orders, history, the outbox and statistics live:
    #: ``sqlite`` (the file at ``path``) or ``postgres`` (shared by every instance; needs
    #: ``backend = "redis"`` and ``fenliu[postgres]``, docs/deploy.md "PostgreSQL").
    records: Literal["sqlite", "postgres"] = "sqlite"
    #: ``postgresql://…`` for ``records = "postgres"``; empty: ``$DATABASE_URL``.
    postgres_url: PostgresUrl = ""
    #: Connections each instance keeps to PostgreSQL at most.
    postgres_pool: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8
    #: Days of message and decision history (and acknowledged replies) kept in PostgreSQL; 0: all.
    history_days: Annotated[float, msgspec.Meta(ge=0)] = 90.0

    def __post_init__(self) -> None:
        if self.records == "postgres" and self.backend != "redis":
            raise ValueError("field records: \"postgres\" needs backend = \"redis\" (one instance keeps its records in SQLite)")


class LoggingConfig(Struct):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class DefaultsConfig(Struct):
    policy: str = "default"
    timezone: str = "Asia/Shanghai"
    #: The platform's window for the 3-minute human reply rate (Pinduoduo: 08:00–23:00, shop time)
    #: and its target, used by ``fenliu stats``, ``/v1/stats`` and the dashboard alike.
    reply_window: tuple[str, str] = ("08:00", "23:00")
    reply_within_s: Seconds = 180.0
    #: The supervisors' dashboard alerts: a buyer waiting ``wait_warn_s`` for a human reply turns
    #: amber, ``wait_alert_s`` (about to miss ``reply_within_s``) red and listed under 即将超时
    #: with a one-click move; a skill group's queue of ``queue_warn`` turns amber, ``queue_alarm`` red.
    wait_warn_s: Seconds = 60.0
    wait_alert_s: Seconds = 150.0
    queue_warn: int = 5
    queue_alarm: int = 10

    def __post_init__(self) -> None:
        from router.core.schedule import _parse_hhmm

        try:
            check_timezone(self.timezone)
        except ValueError as exc:
            raise ValueError(f"field timezone: {exc}") from None
        for value in self.reply_window:
            try:
                _parse_hhmm(value)
            except ValueError as exc:
                raise ValueError(f"field reply_window: {exc}") from None

    def in_reply_window(self, hour_minute: int) -> bool:
        """Whether a local time (minutes after midnight) falls in ``reply_window``."""
        from router.core.schedule import _parse_hhmm

        start, end = (_parse_hhmm(v) for v in self.reply_window)
        return start <= hour_minute < end if start <= end else (hour_minute >= start or hour_minute < end)


class FenliuFile(Struct):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    plugins: PluginsConfig = msgspec.field(default_factory=PluginsConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    defaults: DefaultsConfig = msgspec.field(default_factory=DefaultsConfig)


class Shop(Struct, dict=True):
    id: Id
    name: str = ""
    platform: Platform = "other"
    adapter: str = "bridge"
    secret_env: str | None = None
    policy: str | None = None
    timezone: str | None = None
    business_hours: tuple[Window, ...] = ()
    callback_url: HttpUrl | None = None

    def __post_init__(self) -> None:
        _check_tz_field(self.timezone)

    @cached_property
    def hours(self) -> Schedule:
        return Schedule(self.business_hours, self.timezone or "Asia/Shanghai")

    def is_open(self, ts: float) -> bool:
        return self.hours.is_open(ts)

    @property
    def secret(self) -> bytes | None:
        """The HMAC secret, read from the environment variable ``secret_env``."""
        if not self.secret_env:
            return None
        value = os.environ.get(self.secret_env)
        return value.encode() if value else None


class Agent(Struct, dict=True):
    id: Id
    name: str = ""
    skills: tuple[str, ...] = ()
    shops: tuple[str, ...] = ("*",)
    max_concurrent: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    weight: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 100
    schedule: tuple[Window, ...] = ()
    timezone: str | None = None
    account: str | None = None

    def __post_init__(self) -> None:
        _check_tz_field(self.timezone)

    @cached_property
    def shift(self) -> Schedule:
        return Schedule(self.schedule, self.timezone or "Asia/Shanghai")


def _check_tz_field(name: str | None) -> None:
    if name is not None:
        try:
            check_timezone(name)
        except ValueError as exc:
            raise ValueError(f"field timezone: {exc}") from None


class Target(Struct):
    """One step of a policy's routing: agents with any of ``skills``; after ``timeout_s`` in the
    queue the conversation moves to the next target. ``"@skill"`` stands for the skill the
    classification hook chose."""

    skills: tuple[str, ...] = ("@skill",)
    timeout_s: Seconds | None = None


class Dedicated(Struct):
    """专属客服: these buyers (by id or by tag) go to these agents first."""

    agents: tuple[str, ...]
    buyers: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


class DispatchConfig(Struct):
    strategy: str = "round_robin"
    targets: tuple[Target, ...] = (Target(),)
    skill_targets: dict[str, tuple[Target, ...]] = {}
    default_skill: str = "presale"
    sticky_hours: Annotated[float, msgspec.Meta(ge=0, le=366 * 24)] = 24.0
    aging_per_minute: Annotated[float, msgspec.Meta(ge=0, le=1e6)] = 1.0
    accept_timeout_s: Seconds = 60.0
    on_agent_offline: Literal["reroute", "keep"] = "reroute"
    dedicated: tuple[Dedicated, ...] = ()
    # A conversation ends after a silence, as on the platforms (router/service/lifecycle.py): the buyer
    # silent this long after the agent's last reply, a bot-only conversation this long; none to keep it open.
    idle_close_s: Seconds | None = 600.0
    bot_idle_close_s: Seconds | None = 300.0

    def targets_for(self, skill: str) -> tuple[Target, ...]:
        return self.skill_targets.get(skill, self.targets)


def _error_from_validation(file: Path | str, exc: msgspec.ValidationError, prefix: str = "") -> ConfigError:
    """Turn msgspec's ``Expected `int`, got `str` - at `$.a[0].b``` into ``a[0].b: expected int, got str``
    (msgspec's wording a catalogue message, router/core/i18n.py)."""
    text = str(exc)
    reason, sep, where = text.rpartition(" - at `")
    if not sep:
        reason, where = text, ""
    path = where.rstrip("`").removeprefix("$").removeprefix(".")
    if prefix:
        path = f"{prefix}.{path}" if path and not path.startswith("[") else f"{prefix}{path}"
    plain = reason.replace("`", "")
    if plain.startswith("Object contains unknown field"):
        field = plain.split()[-1]
        return ConfigError(file, f"{path}.{field}" if path else field, _("unknown key"))
    if plain.startswith("Object missing required field"):
        field = plain.split()[-1]
        return ConfigError(file, f"{path}.{field}" if path else field, _("required key is missing"))
    if plain.startswith("field ") and ": " in plain:  # a __post_init__ check naming its key
        field, _sep, why = plain[6:].partition(": ")
        return ConfigError(file, f"{path}.{field}" if path else field, validation_reason(why))
    return ConfigError(file, path, validation_reason(reason))


_BOM = b"\xef\xbb\xbf"
_INT64 = 2**63 - 1


def read_text(path: Path) -> str:
    """A config file's text, or ``ValueError`` with a reason an operator can act on: an empty
    file (an interrupted save), a byte-order mark, or bytes that are not UTF-8 (with where)."""
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(_("file is empty (an interrupted save?)"))
    if data.startswith(_BOM):
        raise ValueError(_("file starts with a byte-order mark (BOM); save it as UTF-8 without BOM"))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[data.rfind(b"\n", 0, exc.start) + 1:exc.start].decode("utf-8", "replace")) + 1
        raise ValueError(_("line {line}, column {column}: not valid UTF-8 (byte 0x{byte:02x}); save the file as UTF-8",
                           line=line, column=column, byte=data[exc.start])) from None


def _odd_numbers(value: Any, path: str, out: list[tuple[str, str]]) -> None:
    """TOML allows ``inf``, ``nan`` and integers beyond 64 bits; no setting wants them, and they
    fail only later (a timer, a JSON encoder), so they are named at load."""
    if isinstance(value, float) and not math.isfinite(value):
        out.append((path, _("expected a finite number, got {value}", value=value)))
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > _INT64:
        out.append((path, _("integer out of range (64-bit)")))
    elif isinstance(value, dict):
        for k, v in value.items():
            _odd_numbers(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _odd_numbers(v, f"{path}[{i}]", out)


def _read_toml(path: Path, errors: list[ConfigError], required: bool = True) -> dict[str, Any] | None:
    """Parse one TOML file; every way it can be unreadable becomes a :class:`ConfigError` in
    ``errors`` (and ``None``), never an exception."""
    try:
        text = read_text(path)
        data = tomllib.loads(text)
    except FileNotFoundError:
        if required:
            errors.append(ConfigError(path, "", _("file not found")))
        return None
    except tomllib.TOMLDecodeError as exc:
        errors.append(ConfigError(path, "", _("TOML syntax error: {detail}", detail=toml_reason(exc))))
        return None
    except ValueError as exc:
        errors.append(ConfigError(path, "", exc.args[0] if exc.args else str(exc)))
        return None
    except OSError as exc:
        errors.append(ConfigError(path, "", _("cannot read: {detail}", detail=exc.strerror or exc)))
        return None
    odd: list[tuple[str, str]] = []
    _odd_numbers(data, "", odd)
    if odd:
        errors.extend(ConfigError(path, key, reason) for key, reason in odd)
        return None
    return data


def decode_section(file: Path | str, data: Any, type_: type, errors: list[ConfigError], prefix: str = "") -> Any:
    """Validate ``data`` as ``type_``; on failure record the error and return ``None``."""
    try:
        return msgspec.convert(data, type_, strict=True)
    except msgspec.ValidationError as exc:
        errors.append(_error_from_validation(file, exc, prefix))
        return None


def _decode_list(file: Path, raw: dict[str, Any], key: str, type_: type, errors: list[ConfigError]) -> list[tuple[int, Any]]:
    """Decode ``[[key]]`` entries one by one, so one run reports a problem in every entry."""
    for other in raw:
        if other != key:
            errors.append(ConfigError(file, other, _("unknown key")))
    items = raw.get(key, [])
    if not isinstance(items, list):
        errors.append(ConfigError(file, key, _("expected an array of tables [[{key}]]", key=key)))
        return []
    out = []
    for i, item in enumerate(items):
        value = decode_section(file, item, type_, errors, prefix=f"{key}[{i}]")
        if value is not None:
            out.append((i, value))
    return out


def policy_type(sections: Mapping[str, type]) -> type:
    """The struct type of a policy file: ``dispatch`` plus every plugin's section."""
    fields: list[tuple[str, type, Any]] = [
        ("dispatch", DispatchConfig, msgspec.field(default_factory=DispatchConfig))
    ]
    for name in sorted(sections):
        fields.append((name, sections[name], msgspec.field(default_factory=sections[name])))
    return msgspec.defstruct("Policy", fields, forbid_unknown_fields=True, kw_only=True)


class Config:
    """A complete, validated configuration. Treated as immutable once loaded: a reload builds a
    new one and swaps it in whole, so derived state cached on it changes atomically too."""

    def __init__(
        self,
        directory: Path,
        main: FenliuFile,
        shops: dict[str, Shop],
        agents: dict[str, Agent],
        policies: dict[str, Any],
        plugins: PluginSet,
    ) -> None:
        self.dir = directory
        self.main = main
        self.shops = shops
        self.agents = agents
        self.policies = policies
        self.plugins = plugins
        self._shop_policy = {
            sid: policies[s.policy or main.defaults.policy] for sid, s in shops.items()
        }

    def policy_for(self, shop_id: str) -> Any:
        return self._shop_policy[shop_id]

    def policy_file(self, name: str) -> Path:
        return self.dir / "policies" / f"{name}.toml"

    def path(self, relative: str) -> Path:
        """A file named in config, relative to the config folder."""
        return self.dir / relative

    @property
    def strategies(self) -> Mapping[str, type]:
        return self.plugins.strategies


def load_config(directory: str | os.PathLike[str], plugins: PluginSet | None = None, *,
                extra: tuple[object, ...] = ()) -> Config:
    """Load and validate ``directory``; raise :class:`ConfigErrors` with every problem found.

    ``plugins`` is the plugin set to validate against; by default one is built from the
    ``[plugins]`` table of ``fenliu.toml``, plus the ``extra`` plugin objects (a reload passes
    those the running configuration was started with).
    """
    root = Path(directory)
    errors: list[ConfigError] = []
    if not root.is_dir():
        raise ConfigErrors([ConfigError(root, "", _("not a directory"))])

    main_path = root / "fenliu.toml"
    raw_main = _read_toml(main_path, errors, required=False)
    main = decode_section(main_path, raw_main or {}, FenliuFile, errors) if raw_main is not None else FenliuFile()
    if main is None:
        raise ConfigErrors(errors)
    if plugins is None:
        plugins = PluginSet.load(main.plugins, errors=errors, config_file=main_path, extra=extra)

    shops_path = root / "shops.toml"
    shops: dict[str, Shop] = {}
    raw = _read_toml(shops_path, errors)
    if raw is not None:
        for i, shop in _decode_list(shops_path, raw, "shops", Shop, errors):
            if shop.id in shops:
                errors.append(ConfigError(shops_path, f"shops[{i}].id", _("duplicate shop id {shop!r}", shop=shop.id)))
            try:
                shop.hours  # noqa: B018 - validates the time zone now
            except ValueError as exc:
                errors.append(ConfigError(shops_path, f"shops[{i}].timezone", exc.args[0]))
            shops[shop.id] = shop

    agents_path = root / "agents.toml"
    agents: dict[str, Agent] = {}
    raw = _read_toml(agents_path, errors)
    if raw is not None:
        for i, agent in _decode_list(agents_path, raw, "agents", Agent, errors):
            if agent.id in agents:
                errors.append(ConfigError(agents_path, f"agents[{i}].id", _("duplicate agent id {agent!r}", agent=agent.id)))
            for j, sid in enumerate(agent.shops):
                if sid != "*" and shops and sid not in shops:
                    errors.append(ConfigError(agents_path, f"agents[{i}].shops[{j}]", _("unknown shop {shop!r}", shop=sid)))
            if not agent.skills:
                errors.append(ConfigError(agents_path, f"agents[{i}].skills", _("an agent needs at least one skill")))
            try:
                agent.shift  # noqa: B018
            except ValueError as exc:
                errors.append(ConfigError(agents_path, f"agents[{i}].timezone", exc.args[0]))
            agents[agent.id] = agent

    ptype = policy_type(plugins.sections)
    policies: dict[str, Any] = {}
    pdir = root / "policies"
    for path in sorted(pdir.glob("*.toml")) if pdir.is_dir() else ():
        raw = _read_toml(path, errors)
        if raw is None:
            continue
        policy = decode_section(path, raw, ptype, errors)
        if policy is not None:
            policies[path.stem] = policy
            _check_policy(path, policy, plugins, agents, errors)

    for i, shop in enumerate(shops.values()):
        name = shop.policy or main.defaults.policy
        if name not in policies and not any(e.file == str(pdir / f"{name}.toml") for e in errors):
            key = f"shops[{i}].policy" if shop.policy else "defaults.policy"
            file = shops_path if shop.policy else main_path
            errors.append(ConfigError(file, key, _("no policy file {path}", path=pdir / (name + ".toml"))))
    if errors:
        raise ConfigErrors(_dedupe(errors))

    config = Config(root, main, shops, agents, policies, plugins)
    plugins.configure(config, errors)
    if errors:
        raise ConfigErrors(_dedupe(errors))
    return config


def _check_policy(path: Path, policy: Any, plugins: PluginSet, agents: dict[str, Agent], errors: list[ConfigError]) -> None:
    d: DispatchConfig = policy.dispatch
    names = sorted(plugins.strategies)
    if d.strategy not in plugins.strategies:
        got = '"' + d.strategy + '"'
        errors.append(ConfigError(path, "dispatch.strategy", _("expected one of {choices}; got {got}", choices=", ".join(f'"{n}"' for n in names), got=got)))
    skills = {s for a in agents.values() for s in a.skills}
    routes = [("dispatch.targets", d.targets)] + [(f"dispatch.skill_targets.{k}", v) for k, v in d.skill_targets.items()]
    for key, targets in routes:
        if not targets:
            errors.append(ConfigError(path, key, _("needs at least one target")))
        for i, t in enumerate(targets):
            for j, s in enumerate(t.skills):
                if s != "@skill" and agents and s not in skills:
                    errors.append(ConfigError(path, f"{key}[{i}].skills[{j}]", _("no agent has skill {skill!r}", skill=s)))
    for i, ded in enumerate(d.dedicated):
        for j, a in enumerate(ded.agents):
            if agents and a not in agents:
                errors.append(ConfigError(path, f"dispatch.dedicated[{i}].agents[{j}]", _("unknown agent {agent!r}", agent=a)))


def _dedupe(errors: list[ConfigError]) -> list[ConfigError]:
    seen: set[str] = set()
    out = []
    for e in errors:
        if str(e) not in seen:
            seen.add(str(e))
            out.append(e)
    return out


def read_word_list(path: Path) -> list[str]:
    """A word list: one entry a line, ``#`` starts a comment, blank lines ignored. An unreadable
    file raises ``ValueError`` with the reason (see :func:`read_text`); an empty one is no words."""
    try:
        text = read_text(path)
    except ValueError as exc:
        if str(exc).startswith("file is empty"):
            return []
        raise
    words = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            words.append(line)
    return words
