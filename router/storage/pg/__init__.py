"""The PostgreSQL records store: what several instances sharing one Redis must also share.

Redis keeps the hot routing state (streams, leases, claims); PostgreSQL keeps the records people
read and that must outlive any instance: accounts, buyer profiles and notes, orders, the message
and decision history, the outbox of replies and what statistics read (docs/deploy.md,
"PostgreSQL"). psycopg 3 is an optional extra (``pip install 'fenliu[postgres]'``): nothing here
is imported unless ``storage.records = "postgres"`` or ``fenliu db`` asks for it.
"""

from __future__ import annotations

import os

from router.core.config import StorageConfig
from router.core.i18n import _

#: Why a command or the service has no database to use.
NO_DATABASE = _("no database: set storage.postgres_url or $DATABASE_URL")


def database_url(storage: StorageConfig) -> str:
    """``storage.postgres_url``, else ``$DATABASE_URL``; empty when neither is set."""
    return storage.postgres_url or os.environ.get("DATABASE_URL", "")
