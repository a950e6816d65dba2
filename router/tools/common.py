"""What every ``fenliu`` command shares, kept apart from the parser so that the commands' modules
can use it while ``cli`` imports them to register them (no import cycle)."""

from __future__ import annotations

import argparse
import sys

from router.core import i18n
from router.core.config import Config, ConfigErrors, load_config


def load_or_report(args: argparse.Namespace) -> Config | None:
    """The configuration named by ``--config``, or ``None`` after printing its errors (one
    ``file: key.path: reason`` a line) on stderr."""
    try:
        return load_config(args.config)
    except ConfigErrors as exc:
        for e in exc.errors:
            print(i18n.t(e), file=sys.stderr)
        return None
