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

import os
import tomllib
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from router.schedule import Schedule, Window

if TYPE_CHECKING:
    from router.plugins import PluginSet

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Platform = Literal["pinduoduo", "taobao", "tmall", "jd", "douyin", "other"]


class ConfigError(Exception):
    """One configuration problem: ``file: key.path: reason``."""

    def __init__(self, file: str | os.PathLike[str], key: str, reason: str) -> None:
        self.file = str(file)
        self.key = key
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}" if self.key else f"{self.file}: {self.reason}"


class ConfigErrors(Exception):
    """All the problems found in one load; ``str()`` gives one error a line."""

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(map(str, self.errors)))


class Struct(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for config tables: unknown keys are errors."""


class ServerConfig(Struct):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1 << 20
    max_batch: Annotated[int, msgspec.Meta(ge=1)] = 500
    ingest_queue_max: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    dedupe_window: Annotated[int, msgspec.Meta(ge=1)] = 1_000_000
    reconnect_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    token_ttl_s: Annotated[float, msgspec.Meta(gt=0)] = 12 * 3600
    watch_config: bool = True
    #: The environment variable holding the bearer token ``GET /metrics`` asks for (unset: open).
    metrics_token_env: str | None = None


class StorageConfig(Struct):
    backend: Literal["sqlite", "redis"] = "sqlite"
    path: str = "var/fenliu.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "fenliu"
    shards: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 8
    #: Journal entries between snapshots of the routing state (0: none); a restart replays
    #: only the entries after the newest one (router/snapshot.py).
    snapshot_every: Annotated[int, msgspec.Meta(ge=0)] = 100_000


class PluginsConfig(Struct):
    enabled: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    hook_timeout_ms: Annotated[float, msgspec.Meta(gt=0)] = 50.0


class LoggingConfig(Struct):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class DefaultsConfig(Struct):
    policy: str = "default"
    timezone: str = "Asia/Shanghai"
    #: The platform's window for the 3-minute human reply rate (Pinduoduo: 08:00–23:00, shop time)
    #: and its target, used by ``fenliu stats``, ``/v1/stats`` and the dashboard alike.
    reply_window: tuple[str, str] = ("08:00", "23:00")
    reply_within_s: Annotated[float, msgspec.Meta(gt=0)] = 180.0

    def __post_init__(self) -> None:
        from router.schedule import _parse_hhmm

        for value in self.reply_window:
            try:
                _parse_hhmm(value)
            except ValueError as exc:
                raise ValueError(f"field reply_window: {exc}") from None

    def in_reply_window(self, hour_minute: int) -> bool:
        """Whether a local time (minutes after midnight) falls in ``reply_window``."""
        from router.schedule import _parse_hhmm

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
    callback_url: str | None = None

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

    @cached_property
    def shift(self) -> Schedule:
        return Schedule(self.schedule, self.timezone or "Asia/Shanghai")


class Target(Struct):
    """One step of a policy's routing: agents with any of ``skills``; after ``timeout_s`` in the
    queue the conversation moves to the next target. ``"@skill"`` stands for the skill the
    classification hook chose."""

    skills: tuple[str, ...] = ("@skill",)
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None


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
    sticky_hours: Annotated[float, msgspec.Meta(ge=0)] = 24.0
    aging_per_minute: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    accept_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    on_agent_offline: Literal["reroute", "keep"] = "reroute"
    dedicated: tuple[Dedicated, ...] = ()

    def targets_for(self, skill: str) -> tuple[Target, ...]:
        return self.skill_targets.get(skill, self.targets)


def _error_from_validation(file: Path | str, exc: msgspec.ValidationError, prefix: str = "") -> ConfigError:
    """Turn msgspec's ``Expected `int`, got `str` - at `$.a[0].b``` into ``a[0].b: expected int, got str``."""
    text = str(exc)
    reason, _, where = text.rpartition(" - at `")
    if not _:
        reason, where = text, ""
    path = where.rstrip("`").removeprefix("$").removeprefix(".")
    if prefix:
        path = f"{prefix}.{path}" if path and not path.startswith("[") else f"{prefix}{path}"
    reason = reason.replace("`", "")
    reason = reason[:1].lower() + reason[1:]
    if reason.startswith("object contains unknown field"):
        field = reason.split()[-1]
        path = f"{path}.{field}" if path else field
        reason = "unknown key"
    elif reason.startswith("object missing required field"):
        field = reason.split()[-1]
        path = f"{path}.{field}" if path else field
        reason = "required key is missing"
    elif reason.startswith("field ") and ": " in reason:  # a __post_init__ check naming its key
        field, _, reason = reason[6:].partition(": ")
        path = f"{path}.{field}" if path else field
    return ConfigError(file, path, reason)


def _read_toml(path: Path, errors: list[ConfigError], required: bool = True) -> dict[str, Any] | None:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        if required:
            errors.append(ConfigError(path, "", "file not found"))
        return None
    except tomllib.TOMLDecodeError as exc:
        errors.append(ConfigError(path, "", f"TOML syntax error: {exc}"))
        return None
    except OSError as exc:
        errors.append(ConfigError(path, "", f"cannot read: {exc.strerror}"))
        return None


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
            errors.append(ConfigError(file, other, "unknown key"))
    items = raw.get(key, [])
    if not isinstance(items, list):
        errors.append(ConfigError(file, key, f"expected an array of tables [[{key}]]"))
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
    from router.plugins import PluginSet

    root = Path(directory)
    errors: list[ConfigError] = []
    if not root.is_dir():
        raise ConfigErrors([ConfigError(root, "", "not a directory")])

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
                errors.append(ConfigError(shops_path, f"shops[{i}].id", f"duplicate shop id {shop.id!r}"))
            try:
                shop.hours  # noqa: B018 - validates the time zone now
            except ValueError as exc:
                errors.append(ConfigError(shops_path, f"shops[{i}].timezone", str(exc)))
            shops[shop.id] = shop

    agents_path = root / "agents.toml"
    agents: dict[str, Agent] = {}
    raw = _read_toml(agents_path, errors)
    if raw is not None:
        for i, agent in _decode_list(agents_path, raw, "agents", Agent, errors):
            if agent.id in agents:
                errors.append(ConfigError(agents_path, f"agents[{i}].id", f"duplicate agent id {agent.id!r}"))
            for j, sid in enumerate(agent.shops):
                if sid != "*" and shops and sid not in shops:
                    errors.append(ConfigError(agents_path, f"agents[{i}].shops[{j}]", f"unknown shop {sid!r}"))
            if not agent.skills:
                errors.append(ConfigError(agents_path, f"agents[{i}].skills", "an agent needs at least one skill"))
            try:
                agent.shift  # noqa: B018
            except ValueError as exc:
                errors.append(ConfigError(agents_path, f"agents[{i}].timezone", str(exc)))
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
            errors.append(ConfigError(file, key, f"no policy file {pdir / (name + '.toml')}"))
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
        errors.append(ConfigError(path, "dispatch.strategy", f"expected one of {', '.join(names)}; got {d.strategy!r}".replace("'", '"')))
    skills = {s for a in agents.values() for s in a.skills}
    routes = [("dispatch.targets", d.targets)] + [(f"dispatch.skill_targets.{k}", v) for k, v in d.skill_targets.items()]
    for key, targets in routes:
        if not targets:
            errors.append(ConfigError(path, key, "needs at least one target"))
        for i, t in enumerate(targets):
            for j, s in enumerate(t.skills):
                if s != "@skill" and agents and s not in skills:
                    errors.append(ConfigError(path, f"{key}[{i}].skills[{j}]", f"no agent has skill {s!r}"))
    for i, ded in enumerate(d.dedicated):
        for j, a in enumerate(ded.agents):
            if agents and a not in agents:
                errors.append(ConfigError(path, f"dispatch.dedicated[{i}].agents[{j}]", f"unknown agent {a!r}"))


def _dedupe(errors: list[ConfigError]) -> list[ConfigError]:
    seen: set[str] = set()
    out = []
    for e in errors:
        if str(e) not in seen:
            seen.add(str(e))
            out.append(e)
    return out


def read_word_list(path: Path) -> list[str]:
    """A word list: one entry a line, ``#`` starts a comment, blank lines ignored."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            words.append(line)
    return words
