"""A pytest plugin for plugin authors (registered as ``pytest11`` entry point ``fenliu``).

Fixtures:

- ``fenliu_config_dir``: a private copy of a configuration folder (the bundled demo config, or
  the one named by ``--fenliu-config``), safe to edit in a test.
- ``fenliu_harness``: a factory ``fenliu_harness(*plugins, config_dir=None)`` returning a
  :class:`Harness` whose router has ``plugins`` registered for this test only.
- ``fenliu_logs``: the structlog events logged during the test
  (``structlog.testing.capture_logs``).

Example::

    async def test_my_plugin(fenliu_harness):
        h = fenliu_harness(my_plugin)
        decision = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="在吗")
        assert decision.action == "assigned"
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog

from router.core.config import Config, load_config
from router.core.ingest import decode_line
from router.core.models import Decision, Message
from router.core.pipeline import Router
from router.core.plugins import PluginSet

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config"


class Harness:
    """A router with extra plugins, fed messages and events directly (no server)."""

    def __init__(self, config: Config, *, reservations: bool = False) -> None:
        self.config = config
        self.router = Router(config, reservations=reservations)
        self.decisions: list[Decision] = []
        self._ids = itertools.count(1)
        self._ts = 1763880000.0

    @classmethod
    def build(cls, config_dir: str | Path, plugins: tuple[object, ...] = (), **kw: Any) -> Harness:
        from router.core.config import FenliuFile, _read_toml

        raw = _read_toml(Path(config_dir) / "fenliu.toml", [], required=False) or {}
        settings = msgspec.convert(raw, FenliuFile).plugins
        return cls(load_config(config_dir, PluginSet.load(settings, extra=plugins)), **kw)

    @property
    def dispatcher(self):
        return self.router.dispatcher

    async def send(self, message: Message | dict[str, Any] | None = None, **fields: Any) -> Decision:
        """Route one message and return its own decision. Missing ``msg_id`` and ``ts`` are
        filled in (one second apart); other decisions it caused are in ``self.decisions``."""
        data = dict(message or {}, **fields) if not isinstance(message, Message) else None
        if data is not None:
            data.setdefault("msg_id", f"t-{next(self._ids):06d}")
            if "ts" not in data:
                self._ts += 1.0
                data["ts"] = self._ts
            message = msgspec.convert(data, Message)
        assert isinstance(message, Message)
        decisions = await self.router.handle_message(message)
        self.decisions.extend(decisions)
        return next(d for d in decisions if d.msg_id == message.msg_id)

    async def event(self, event: dict[str, Any]) -> list[Decision]:
        data = dict(event)
        if "ts" not in data:
            self._ts += 1.0
            data["ts"] = self._ts
        decisions = await self.router.handle_event(decode_line(msgspec.json.encode(data)))  # type: ignore[arg-type]
        self.decisions.extend(decisions)
        return decisions

    async def check_reply(self, shop_id: str, text: str):
        return await self.router.check_reply(shop_id, text)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fenliu-config", default=None, help="configuration folder the fenliu fixtures copy")


@pytest.fixture
def fenliu_config_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    source = Path(request.config.getoption("--fenliu-config") or DEMO_CONFIG)
    target = tmp_path / "config"
    shutil.copytree(source, target)
    return target


@pytest.fixture
def fenliu_harness(fenliu_config_dir: Path):
    def make(*plugins: object, config_dir: str | Path | None = None, **kw: Any) -> Harness:
        return Harness.build(config_dir or fenliu_config_dir, plugins, **kw)

    return make


@pytest.fixture
def fenliu_logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as logs:
        yield logs


__all__ = ["DEMO_CONFIG", "Harness"]
