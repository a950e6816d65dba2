"""The plugin contract's first address (DESIGN.md), kept so plugins written against it still
load: the contract itself is :mod:`router.core.hookspecs` (the core layer, docs/architecture.md).
New plugins import ``from router.core.hookspecs import hookimpl``."""

from router.core.hookspecs import *  # noqa: F403
from router.core.hookspecs import hookimpl, hookspec  # noqa: F401
