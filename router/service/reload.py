"""Safe hot reload of the configuration folder.

A reload validates the *whole* new configuration first (in a worker thread: building automata
must not stall the event loop), and only then hands it to ``apply``, which the service runs
between two messages. A bad configuration never reaches the router: the old one keeps running,
the errors (``file: key.path: reason``) are logged and kept for ``POST /v1/admin/reload``, and
``fenliu_config_reload_failures_total`` counts the failure.

A configuration can also be valid and still be a mistake: a save cut short that empties a word
list, or leaves ``agents.toml`` with only its header comment, or drops the ``[sensitive]`` table
of a policy. So a reload is also compared with the running configuration, and refused when it
would empty a file that had content, leave a shop that had agents with none, or turn a shop's
outbound filter off or drop some of its rules (a policy cut short before its ``[sensitive]``
table keeps only the default patterns). ``force`` (``fenliu reload --force``, ``{"force": true}`` on the admin
endpoint) applies it anyway, for when that is what the operator means.

Triggers: file changes under the folder (watchfiles, debounced), SIGHUP, and the admin endpoint.
The watcher outlives every failure: a reload attempt that fails is logged and counted, and the
watch goes on, so the next good save is picked up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import structlog

from router.core.config import Config, ConfigError, ConfigErrors, load_config
from router.core.i18n import _

log = structlog.get_logger("fenliu.reload")

#: Editors' swap and backup files: never configuration, and never a reason to reload.
TEMP_SUFFIXES = ("~", ".swp", ".swx", ".tmp", ".bak")


class ReloadResult(msgspec.Struct):
    ok: bool
    trigger: str
    #: One ``file: key.path: reason`` line each (a :class:`router.core.i18n.Text`: English in logs, translated where shown).
    errors: list[str] = msgspec.field(default_factory=list)
    generation: int = 0
    #: ``errors`` are refusals a forced reload would override (the configuration itself is valid).
    refused: bool = False
    #: The refusals a forced reload overrode (applied anyway).
    forced: list[str] = msgspec.field(default_factory=list)


def _is_config_file(path: Path) -> bool:
    return not path.name.startswith(".") and not path.name.endswith(TEMP_SUFFIXES)


def has_content(data: bytes) -> bool:
    """Whether a file holds anything but blank lines and ``#`` comments (true of TOML and of
    word lists alike)."""
    return any(line.strip() and not line.strip().startswith(b"#") for line in data.splitlines())


def scan_contents(directory: Path) -> dict[str, bool]:
    """Every file under the folder, relative name → whether it has content."""
    out: dict[str, bool] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts) or not _is_config_file(path):
            continue
        try:
            if path.is_file():
                out[str(rel)] = has_content(path.read_bytes())
        except OSError:
            continue
    return out


def serving(config: Config, shop_id: str) -> list[str]:
    """The agents that may take the shop's conversations."""
    return [aid for aid, a in config.agents.items() if "*" in a.shops or shop_id in a.shops]


def outbound_rules(config: Config, shop_id: str) -> set[str]:
    """What checks an agent's replies to the shop's buyers before they leave: for every plugin
    on the ``fenliu_outbound_filter`` chain, the named items of its policy section whose
    ``outbound`` action is not ``"off"`` (the sensitive-word lists and patterns), or the plugin
    itself when its section has no such items; none when the section says ``enabled = false``."""
    try:
        chain = config.plugins.chain("fenliu_outbound_filter")
    except KeyError:
        return set()
    policy = config.policy_for(shop_id)
    rules: set[str] = set()
    for plugin in chain:
        section = getattr(policy, plugin, None)
        if getattr(section, "enabled", True) is False:
            continue
        items = [item for field in (msgspec.structs.fields(section) if isinstance(section, msgspec.Struct) else ())
                 for item in _tuple(getattr(section, field.name))
                 if hasattr(item, "outbound") and hasattr(item, "name")]
        if not items:
            rules.add(plugin)
        rules.update(f"{plugin}.{item.name}" for item in items if item.outbound != "off")
    return rules


def _tuple(value: Any) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else ()


def guard(old: Config, new: Config, old_files: dict[str, bool], new_files: dict[str, bool]) -> list[ConfigError]:
    """The reasons to refuse ``new`` in place of ``old`` although it is valid."""
    problems: list[ConfigError] = []
    for rel, had in sorted(old_files.items()):
        if had and new_files.get(rel) is False:
            problems.append(ConfigError(new.dir / rel, "", _("the reload would empty this file (it had content)")))
    shops_path, agents_path = new.dir / "shops.toml", new.dir / "agents.toml"
    for i, sid in enumerate(new.shops):
        if sid not in old.shops:
            continue
        before = serving(old, sid)
        if before and not serving(new, sid):
            problems.append(ConfigError(agents_path, "agents", _("no agent would serve shop {shop!r} (now {n}: {agents})",
                                                                 shop=sid, n=len(before), agents=", ".join(before))))
        had, will = outbound_rules(old, sid), outbound_rules(new, sid)
        lost = sorted(had - will)
        if lost:
            shop = new.shops[sid]
            name = shop.policy or new.main.defaults.policy
            if not new.plugins.chain("fenliu_outbound_filter") or {r.split(".")[0] for r in lost} - set(
                    new.plugins.chain("fenliu_outbound_filter")):
                file, key = new.dir / "fenliu.toml", "plugins"
            elif name != (old.shops[sid].policy or old.main.defaults.policy):
                file, key = (shops_path, f"shops[{i}].policy") if shop.policy else (new.dir / "fenliu.toml", "defaults.policy")
            else:
                file, key = new.policy_file(name), lost[0].split(".")[0]
            shown = ", ".join(lost[:6]) + (", ..." if len(lost) > 6 else "")
            why = (_("the outbound filter of shop {shop!r} would be off: {rules}", shop=sid, rules=shown) if not will
                   else _("the outbound filter of shop {shop!r} would lose outbound rules: {rules}", shop=sid, rules=shown))
            problems.append(ConfigError(file, key, why))
    return problems


class Reloader:
    """Loads, validates and applies configuration changes, one at a time."""

    def __init__(
        self,
        directory: str | Path,
        apply: Callable[[Config], Awaitable[Any] | Any],
        *,
        on_failure: Callable[[ReloadResult], None] | None = None,
        load: Callable[[Path], Config] | None = None,
        extra: tuple[object, ...] = (),
        current: Callable[[], Config | None] | None = None,
    ) -> None:
        """``current`` gives the running configuration the guards compare a new one with
        (default: the last one this reloader applied; none before the first)."""
        self.directory = Path(directory)
        self._apply = apply
        self._on_failure = on_failure
        self._load = load or (lambda d: load_config(d, extra=extra))
        self._current = current or (lambda: self._applied)
        self._applied: Config | None = None
        self._lock = anyio.Lock()
        self._files = scan_contents(self.directory) if self.directory.is_dir() else {}
        self.generation = 0
        self.failures = 0
        self.last: ReloadResult | None = None

    def _load_and_scan(self) -> tuple[Config, dict[str, bool]]:
        files = scan_contents(self.directory) if self.directory.is_dir() else {}
        return self._load(self.directory), files

    async def reload(self, trigger: str = "manual", *, force: bool = False) -> ReloadResult:
        """Load, validate, guard and apply; never raises for anything the files contain."""
        async with self._lock:
            try:
                config, files = await anyio.to_thread.run_sync(self._load_and_scan)
            except ConfigErrors as exc:
                return self._failed(ReloadResult(False, trigger, [e.args[0] for e in exc.errors], self.generation))
            except Exception as exc:  # noqa: BLE001 - a bug in a loader must not end the watch or answer 500
                log.exception("config_reload_crashed", trigger=trigger)
                error = type(exc).__name__ + ": " + str(exc)
                return self._failed(ReloadResult(False, trigger, [_("{dir}: reload failed: {error}", dir=self.directory,
                                                                    error=error)], self.generation))
            old = self._current()
            problems = [p.args[0] for p in guard(old, config, self._files, files)] if old is not None else []
            if problems and not force:
                return self._failed(ReloadResult(False, trigger, problems, self.generation, refused=True))
            try:
                applied = self._apply(config)
                if hasattr(applied, "__await__"):
                    await applied
            except Exception as exc:  # noqa: BLE001
                log.error("config_apply_failed", trigger=trigger, error=f"{type(exc).__name__}: {exc}")
                error = type(exc).__name__ + ": " + str(exc)
                return self._failed(ReloadResult(False, trigger, [_("{dir}: could not apply: {error}", dir=self.directory,
                                                                    error=error)], self.generation))
            self._applied = config
            self._files = files
            self.generation += 1
            result = ReloadResult(True, trigger, [], self.generation, forced=problems)
            if problems:
                log.warning("config_reload_forced", trigger=trigger, overridden=problems)
            log.info("config_reloaded", trigger=trigger, generation=self.generation,
                     shops=len(config.shops), agents=len(config.agents))
            self.last = result
            return result

    def _failed(self, result: ReloadResult) -> ReloadResult:
        self.failures += 1
        if result.refused:
            log.error("config_reload_refused", trigger=result.trigger, errors=result.errors,
                      hint="fix the files, or force: fenliu reload --force")
        else:
            log.error("config_reload_failed", trigger=result.trigger, errors=result.errors)
        if self._on_failure is not None:
            self._on_failure(result)
        self.last = result
        return result

    async def watch(self, *, debounce_ms: int = 300, ready: anyio.Event | None = None,
                    retry_s: float = 1.0) -> None:
        """Reload whenever a file under the folder changes (editors' temp files excepted: a
        half-written file fails validation and the old configuration simply stays). Runs until
        cancelled: a failing reload, or the watch itself failing (the folder renamed away while
        an editor saves), is logged in one line and the watch goes on."""
        from watchfiles import awatch

        def wanted(_change: Any, path: str) -> bool:
            return _is_config_file(Path(path))

        while True:
            try:
                if ready is not None:
                    ready.set()
                async for changes in awatch(self.directory, debounce=debounce_ms, recursive=True,
                                            watch_filter=wanted):
                    names = sorted({Path(p).name for _, p in changes})
                    try:
                        await self.reload("watch:" + ",".join(names))
                    except Exception as exc:  # noqa: BLE001 - reload() already reports; never end the watch
                        log.error("config_watch_reload_error", error=f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001
                log.warning("config_watch_error", directory=str(self.directory),
                            error=f"{type(exc).__name__}: {exc}", retry_s=retry_s)
            await anyio.sleep(retry_s)
