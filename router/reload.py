"""Safe hot reload of the configuration folder.

A reload validates the *whole* new configuration first (in a worker thread: building automata
must not stall the event loop), and only then hands it to ``apply``, which the service runs
between two messages. A bad configuration never reaches the router: the old one keeps running,
the errors (``file: key.path: reason``) are logged and kept for ``POST /v1/admin/reload``, and
``fenliu_config_reload_failures_total`` counts the failure.

Triggers: file changes under the folder (watchfiles, debounced), SIGHUP, and the admin endpoint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import structlog

from router.config import Config, ConfigErrors, load_config

log = structlog.get_logger("fenliu.reload")


class ReloadResult(msgspec.Struct):
    ok: bool
    trigger: str
    errors: list[str] = msgspec.field(default_factory=list)
    generation: int = 0


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
    ) -> None:
        self.directory = Path(directory)
        self._apply = apply
        self._on_failure = on_failure
        self._load = load or (lambda d: load_config(d, extra=extra))
        self._lock = anyio.Lock()
        self.generation = 0
        self.failures = 0
        self.last: ReloadResult | None = None

    async def reload(self, trigger: str = "manual") -> ReloadResult:
        async with self._lock:
            try:
                config = await anyio.to_thread.run_sync(self._load, self.directory)
            except ConfigErrors as exc:
                result = ReloadResult(False, trigger, [str(e) for e in exc.errors], self.generation)
                self.failures += 1
                log.error("config_reload_failed", trigger=trigger, errors=result.errors)
                if self._on_failure is not None:
                    self._on_failure(result)
                self.last = result
                return result
            applied = self._apply(config)
            if hasattr(applied, "__await__"):
                await applied
            self.generation += 1
            result = ReloadResult(True, trigger, [], self.generation)
            log.info("config_reloaded", trigger=trigger, generation=self.generation,
                     shops=len(config.shops), agents=len(config.agents))
            self.last = result
            return result

    async def watch(self, *, debounce_ms: int = 300, ready: anyio.Event | None = None) -> None:
        """Reload whenever a file under the folder changes (editors' temp files included: a
        half-written file fails validation and the old configuration simply stays)."""
        from watchfiles import awatch

        if ready is not None:
            ready.set()
        async for changes in awatch(self.directory, debounce=debounce_ms, recursive=True,
                                    watch_filter=lambda _c, path: not path.endswith(("~", ".swp", ".tmp"))):
            names = sorted({Path(p).name for _, p in changes})
            await self.reload("watch:" + ",".join(names))
