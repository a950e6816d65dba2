"""Snapshots of the routing state, so that a restart replays only the journal's tail.

Replay routes every journal entry again through the plugins (≈ 16,500 entries a second on the
test machine), so without snapshots a restart after ten million messages would take ten
minutes. Every ``storage.snapshot_every`` entries, and when the service stops, the service waits
until every routed batch is committed and its agents told, then pickles what replay would
rebuild: the dispatcher (conversations with their plugin ``meta``, agents, queues, timers,
counters), and the conversations' history and context. On start the newest snapshot is
restored and only the entries after it are replayed; the dedupe ids are read back from the
journal without routing.

The pickling does not hold up routing (:func:`dump_later`): the service forks, and the child
pickles its copy-on-write image of the state as it was at the fork while the parent goes on
routing (Redis's ``BGSAVE``). Pickling a 1.9 MB state on the event loop held every request for
≈ 80 ms; a fork costs the loop a few milliseconds (docs/service.md, "Latency").

A snapshot is used only if it was taken under the same configuration files, the same Fenliu
and the same plugins (:func:`fingerprint`); otherwise, or if it cannot be read, the whole
journal is replayed as before. Plugins that keep routing state outside ``ctx.meta`` lose it
across a restored snapshot (docs/plugins.md).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import os
import pickle
import signal
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from router import __version__
from router.core.sticky import StickyMemory

if TYPE_CHECKING:
    from router.core.config import Config
    from router.core.dispatch import Dispatcher

#: Bumped whenever what a snapshot holds changes shape: an older snapshot is then ignored.
FORMAT = 2

#: Dispatcher attributes that come from the configuration (reattached on restore) or from the
#: service (hooks), not from routing.
_FROM_CONFIG = ("config", "_policy", "claim_hook", "release_hook")
#: Dispatcher counters, kept as the next value they will give (``itertools.count`` objects are
#: not to be pickled from Python 3.14 on).
_COUNTERS = ("_seq", "_conv_seq", "_timer_seq")
#: The files of the configuration folder that count (not editors' backups, not a store kept there).
_CONFIG_SUFFIXES = frozenset((".toml", ".txt", ".json", ".yaml", ".yml", ".csv"))


def fingerprint(config: Config) -> str:
    """What the routing state depends on besides the journal: the configuration (every file but
    ``fenliu.toml``, of which only ``[plugins]`` and ``[defaults]``: a new port, store path or
    log level keeps snapshots usable), Fenliu's version and the plugins loaded (with their
    versions where they are installed packages)."""
    h = hashlib.sha256(f"fenliu {__version__} snapshot {FORMAT}\n".encode())
    h.update(msgspec.json.encode((config.main.plugins, config.main.defaults)) + b"\0")
    root = Path(config.dir)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _CONFIG_SUFFIXES):
        if path.relative_to(root) != Path("fenliu.toml"):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    pm = config.plugins.pm
    versions = {getattr(plugin, "__name__", repr(plugin)): f"{dist.project_name} {dist.version}"
                for plugin, dist in pm.list_plugin_distinfo()}
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: str(item[0])):
        h.update(f"plugin {name} {versions.get(getattr(plugin, '__name__', ''), '')}\n".encode())
    return h.hexdigest()


def _take_counters(d: Dispatcher) -> dict[str, int]:
    """The counters' next values; each counter is replaced by one that gives the same values."""
    values = {}
    for name in _COUNTERS:
        n = next(getattr(d, name))
        setattr(d, name, itertools.count(n))
        values[name] = n
    return values


def dump(d: Dispatcher, service_state: bytes) -> bytes:
    """The dispatcher's routing state, pickled (its conversations' plugin ``meta`` may hold any
    picklable value), with the service's per-conversation state as the service encoded it."""
    state = {k: v for k, v in vars(d).items() if k not in _FROM_CONFIG and k not in _COUNTERS}
    state.update(_take_counters(d))
    return pickle.dumps({"format": FORMAT, "dispatcher": state, "service": service_state},
                        protocol=pickle.HIGHEST_PROTOCOL)


#: What the pickling child writes to its pipe: the body's length and whether it is a pickle
#: (0) or the error the pickling raised (1), then the body; a short read means the child died.
_RESULT = struct.Struct(">QB")


class SnapshotError(Exception):
    """The pickling failed (in the child: its error's text), or the child died."""


def dump_later(d: Dispatcher, service_state: Callable[[], bytes]) -> Callable[[], bytes]:
    """Start :func:`dump` of the state as it is now, ``service_state()`` included; returns a
    blocking function (for a thread) that gives the pickle or raises :class:`SnapshotError`.

    Where it can, a forked child pickles its copy of the state, so the caller may go on changing
    its own at once. The child runs nothing but the pickling: the parent's threads (the store's)
    do not exist in it, and it touches no lock, file or loop the parent holds. Without
    ``os.fork`` (or when it fails), the state is pickled here and now, as before."""
    fork = getattr(os, "fork", None)
    if fork is not None:
        r, w = os.pipe()
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns that the child of a threaded process may deadlock on a lock
                # another thread held; this child only pickles objects of modules already imported,
                # writes its pipe and exits (no logging, no store, no event loop).
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = fork()
        except OSError:
            os.close(r)
            os.close(w)
        else:
            if pid == 0:  # pragma: no cover - the child, measured by its parent's tests
                _pickle_and_exit(r, w, d, service_state)
            os.close(w)
            return lambda: _read_child(pid, r)
    try:
        body = dump(d, service_state())
    except Exception as exc:  # noqa: BLE001 - reported where the pickle is collected
        error = SnapshotError(f"{type(exc).__name__}: {exc}")

        def fail() -> bytes:
            raise error
        return fail
    return lambda: body


def _pickle_and_exit(r: int, w: int, d: Dispatcher, service_state: Callable[[], bytes]) -> None:
    """The forked child: pickle, write the result to ``w``, exit without running any of the
    parent's clean-ups (``os._exit``: no atexit, no buffered output written twice)."""
    code = 1
    try:
        os.close(r)
        gc.disable()  # it lives for one pickling; a collection would only copy more pages
        with contextlib.suppress(ValueError, OSError):  # (not forked from the main thread)
            for sig in (signal.SIGINT, signal.SIGTERM):  # the parent stops, then waits for this child
                signal.signal(sig, signal.SIG_IGN)
            signal.set_wakeup_fd(-1)  # a signal here must not wake the parent's event loop
        try:
            body, kind = dump(d, service_state()), 0
        except Exception as exc:  # noqa: BLE001 - e.g. a plugin put something unpicklable in meta
            body, kind = f"{type(exc).__name__}: {exc}".encode(), 1
        view = memoryview(_RESULT.pack(len(body), kind) + body)
        while view:
            view = view[os.write(w, view):]
        code = 0
    finally:
        os._exit(code)


def _read_child(pid: int, fd: int) -> bytes:
    with open(fd, "rb") as pipe:
        data = pipe.read()
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # reaped by someone else: the pipe says whether it finished
        pass
    if len(data) >= _RESULT.size:
        size, kind = _RESULT.unpack_from(data)
        if len(data) == _RESULT.size + size:
            body = data[_RESULT.size:]
            if kind == 1:
                raise SnapshotError(body.decode(errors="replace"))
            return body
    raise SnapshotError("the pickling child exited before it was done")


def load(body: bytes) -> dict[str, Any]:
    """Unpickle a snapshot (raises on anything it cannot read, or on another format)."""
    snap = pickle.loads(body)  # noqa: S301 - our own store, written by this service
    if not isinstance(snap, dict) or snap.get("format") != FORMAT:
        raise ValueError(f"snapshot format {snap.get('format') if isinstance(snap, dict) else '?'}, expected {FORMAT}")
    return snap


def restore(d: Dispatcher, state: dict[str, Any]) -> None:
    """Put an unpickled dispatcher state into ``d``, which keeps its configuration."""
    state = dict(state)
    for name in _COUNTERS:
        state[name] = itertools.count(state[name])
    if type(state.get("last_agent")) is dict:  # taken before the sticky memory was bounded
        state["last_agent"] = StickyMemory(state["last_agent"])
    vars(d).update(state)
