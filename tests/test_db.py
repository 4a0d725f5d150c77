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


def test_a_service_connection_plans_for_the_table_it_has_now_not_the_one_it_had(database_url: str) -> None:
    """A new deployment's statements are prepared while its tables are empty and never analyzed: the
    plan of a lookup must still use the index once the table has grown."""
    with db.connect(Settings(database_url=database_url), "identity-test") as conn:
        conn.execute("CREATE TEMP TABLE young (source text, event_id text, PRIMARY KEY (source, event_id))")
        # The shape of the core's processed-event lookup (consumer/queries.py).
        conn.execute(
            "PREPARE lookup(jsonb) AS SELECT * FROM young "
            "JOIN jsonb_to_recordset($1) AS k(source text, event_id text) USING (source, event_id)"
        )
        keys = '[{"source": "s", "event_id": "1"}]'
        for _ in range(10):  # past the executions after which PostgreSQL may keep a generic plan
            conn.execute(f"EXECUTE lookup('{keys}')")
        conn.execute("INSERT INTO young SELECT 's', g::text FROM generate_series(1, 100000) AS g")
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN EXECUTE lookup('{keys}')"))
    assert "Seq Scan" not in plan, plan
    assert "Index" in plan, plan


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
