"""consumer/db.py: every service connection names itself and keeps its TCP connection alive."""

from __future__ import annotations

import psycopg
import pytest

from consumer import db
from consumer.config import Settings


def test_a_service_connection_names_itself_and_has_keepalives(database_url: str) -> None:
    settings = Settings(database_url=database_url)
    with db.connect(settings, "identity-test") as conn:
        row = conn.execute(
            "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
        assert row == ("identity-test",)
        params = conn.info.get_parameters()
        assert conn.autocommit
    assert params["application_name"] == "identity-test"
    kwargs = db.connection_kwargs(settings, "x")
    assert kwargs["keepalives"] == 1
    assert kwargs["connect_timeout"] == settings.database_connect_timeout_s


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (psycopg.OperationalError("connection lost"), True),  # no SQLSTATE: the link itself
        (psycopg.errors.AdminShutdown(), True),
        (psycopg.errors.DeadlockDetected(), True),
        (psycopg.errors.LockNotAvailable(), True),
        (psycopg.errors.ReadOnlySqlTransaction(), True),
        (psycopg.errors.ProgramLimitExceeded(), False),  # too large for an index, on every retry too
        (psycopg.errors.UniqueViolation(), False),
        (ValueError("not a database error"), False),
    ],
)
def test_unavailable_means_the_database_cannot_serve_now(error: BaseException, transient: bool) -> None:
    assert db.unavailable(error) is transient
