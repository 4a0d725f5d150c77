"""A brand-new, empty database on the test server, for tests that need their own schema."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create an empty database next to `server_url`'s, yield its URL, drop it afterwards."""
    dbname = f"test_{uuid.uuid4().hex[:16]}"
    name = sql.Identifier(dbname)
    try:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    except errors.InsufficientPrivilege:
        pytest.skip("the test database user may not create databases")
    try:
        # A lock wait that never ends is a failure, not a hung test run.
        yield make_conninfo(server_url, dbname=dbname, options="-c lock_timeout=20s")
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))
