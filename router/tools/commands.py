"""Registration point for the commands that live in heavier modules (``serve``, ``simulate``,
``stats``, ``accounts``, ``reload``); each imports its heavy dependencies only when run."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from router.core import i18n


def register(add: Callable[[str, str], Any], command: Callable[[str], Any]) -> None:
    from router.tools.faq_cli import register as faq_register
    from router.tools.db_cli import register as db_register
    from router.tools.reload_cli import register as reload_register
    from router.tools.serve_cli import register as serve_register
    from router.tools.simulate_cli import add_arguments as simulate_arguments
    from router.tools.stats_cli import register as stats_register

    simulate_arguments(add("simulate", i18n.gettext("replay traffic against policies on a virtual clock and report")))
    command("simulate")(lambda args: import_module("router.tools.simulate_cli").run_command(args))
    from router.tools.plan import add_arguments as plan_arguments

    plan_arguments(add("plan", i18n.gettext("the fewest agents per hour that meet a reply-rate target, confirmed by simulation")))
    command("plan")(lambda args: import_module("router.tools.plan").run_command(args))
    serve_register(add, command)
    reload_register(add, command)
    stats_register(add, command)
    faq_register(add, command)
    db_register(add, command)
