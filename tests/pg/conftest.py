"""Fixtures of the PostgreSQL tests: ``pg_url``, a database of its own (random name) created for
the test and dropped after, on the server at ``PG_ADMIN_URL`` (default: the local one, trust
authentication as ``postgres``). Skips with the reason where no PostgreSQL answers."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

psycopg = pytest.importorskip("psycopg", reason="PostgreSQL support not installed: pip install 'fenliu[postgres]'")

ADMIN_URLS = [os.environ["PG_ADMIN_URL"]] if os.environ.get("PG_ADMIN_URL") else [
    "postgresql://postgres@127.0.0.1:5432/postgres", "postgresql://root@127.0.0.1:5432/postgres"]


def _admin() -> tuple[psycopg.Connection, str]:
    errors = []
    for url in ADMIN_URLS:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=2), url
        except psycopg.Error as exc:
            errors.append(f"{url}: {str(exc).strip().splitlines()[0]}")
    pytest.skip("no PostgreSQL answers (" + "; ".join(errors) + ")")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of an empty database made for this test, dropped afterwards."""
    admin, url = _admin()
    name = f"fenliu_test_{secrets.token_hex(5)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
