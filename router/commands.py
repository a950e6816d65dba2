"""Registration point for the commands that live in heavier modules (``serve``, ``simulate``,
``stats``, ``accounts``); each imports its module only when run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def register(add: Callable[[str, str], Any], command: Callable[[str], Any]) -> None:
    return None
