"""The errors every layer raises and catches: configuration problems (``file: key.path: reason``)
and refusals with an HTTP status. They sit at the bottom so the plugin machinery, the stores and
the service can raise them without importing one another."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from router.core.i18n import Text, _


class ConfigError(Exception):
    """One configuration problem: ``file: key.path: reason``."""

    def __init__(self, file: str | os.PathLike[str], key: str, reason: str) -> None:
        self.file = str(file)
        self.key = key
        self.reason = reason

    def __setattr__(self, name: str, value: Any) -> None:
        # args[0] is the line as a catalogue message, kept up to date when a caller renames the key
        # or rewords the reason: t(error) prints it in the current language, str(error) in English.
        super().__setattr__(name, value)
        if name in ("file", "key", "reason") and "reason" in self.__dict__:
            why = self.reason if isinstance(self.reason, Text) else Text(str(self.reason))  # plugins' words: matched back
            self.args = (_("{file}: {key}: {reason}", file=self.file, key=self.key, reason=why) if self.key
                         else _("{file}: {reason}", file=self.file, reason=why),)

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}" if self.key else f"{self.file}: {self.reason}"


class ConfigErrors(Exception):
    """All the problems found in one load; ``str()`` gives one error a line."""

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(map(str, self.errors)))


class HTTPError(Exception):
    """A refusal raised from anywhere under a handler (the stores included: a records database
    that cannot be read is ``503``); the server's error wrapper turns it into the JSON error body
    (``code`` defaults to the status's)."""

    def __init__(self, status: int, reason: str, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code
        self.headers = headers
