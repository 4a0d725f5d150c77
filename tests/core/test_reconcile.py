"""A core transaction on the wire: its round trips (from libpq's protocol trace), its end when it fails."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import pq

from consumer.core import reconcile_batch
from consumer.core.blocklist import lock_key
from consumer.core.reconcile import DEFAULT_GUARDRAILS, with_identities
from consumer.normalize import Identifiers
from tests.core.helpers import contacts, request


def round_trips(conn: psycopg.Connection[Any], work: Callable[[], object]) -> int:
    """How many times `work` waited for PostgreSQL: each run of messages the server sends back after
    the client's is the answer to one round trip."""
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            work()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        senders = [line[0] for line in trace if line[:1] in ("F", "B")]
    return sum(
        1 for before, now in zip(["F", *senders], senders, strict=False) if (before, now) == ("F", "B")
    )


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "transactional"])
def test_a_batch_takes_three_round_trips(
    database_url: str, db: psycopg.Connection[Any], autocommit: bool
) -> None:
    """Locks and lookups, more locks with the clusters, writes with COMMIT: whatever the batch holds
    (a match, new rows, a replay, a junk value), and whatever the connection's autocommit."""
    with psycopg.connect(database_url, autocommit=True) as setup:
        reconcile_batch(setup, [request("a@x.io", "+1 555 0100", event="0")])
    batch = [
        request("a@x.io", "+1 555 0101", event="1"),
        request("b@x.io", event="2"),
        request("test@test.com", "+1 555 0102", event="3"),  # a junk email
        request("a@x.io", "+1 555 0100", event="0"),  # a replay
    ]
    with psycopg.connect(database_url, autocommit=autocommit) as conn:
        assert round_trips(conn, lambda: reconcile_batch(conn, batch)) == 3
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        assert conn.autocommit is autocommit
    assert sorted(row.email or "" for row in contacts(db)) == ["", "a@x.io", "a@x.io", "b@x.io"]


def test_a_failed_transaction_is_rolled_back(database_url: str, db: psycopg.Connection[Any]) -> None:
    """A transaction that fails on the server (here, a lock timeout while waiting) is rolled back and
    the connection left idle, ready for the next one.

    Each failure runs a try-lock transaction, then one that waits. With statements prepared on their
    third run, the second failure is where psycopg prepares those sent after the failing lock: the
    server skips those prepares, and the next transaction must not count on them."""
    with psycopg.connect(database_url, autocommit=True) as holder, psycopg.connect(database_url) as conn:
        conn.prepare_threshold = 3
        holder.execute("SELECT pg_advisory_lock(%s)", [lock_key("email", "c@x.io")])
        conn.execute("SET lock_timeout = '100ms'")
        conn.commit()
        for _ in range(2):
            with pytest.raises(psycopg.errors.LockNotAvailable):
                reconcile_batch(conn, [request("c@x.io", event="4")])
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        holder.execute("SELECT pg_advisory_unlock(%s)", [lock_key("email", "c@x.io")])
        reconcile_batch(conn, [request("c@x.io", event="4")])
    assert [row.email for row in contacts(db)] == ["c@x.io"]


def test_a_transaction_prefers_indexes_and_leaves_the_session_as_it_was(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    """Its statements plan as index lookups whatever the statistics (tests/test_queries.py); the
    setting is the transaction's own."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        seen = with_identities(
            conn,
            [Identifiers(email="a@x.io", phone=None)],
            DEFAULT_GUARDRAILS,
            lambda tx: tx.conn.execute("SHOW enable_seqscan").fetchone(),
        )
        after = conn.execute("SHOW enable_seqscan").fetchone()
    assert seen == ("off",)
    assert after == ("on",)


def test_the_server_keeps_one_plan_per_statement(database_url: str, db: psycopg.Connection[Any]) -> None:
    """Once psycopg has prepared a statement (its sixth run) the server plans it a few more times, then
    keeps a generic plan: no statement of a transaction is planned anew on every run, which would cost
    the server tens of microseconds per run (the contact ids' once did: generate_series's estimate)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        for n in range(20):  # new rows, a match and a merge in every batch
            batch = [
                request(f"p{n}@x.io", f"+1 555 02{n:02}", event=f"a{n}"),
                request(f"q{n}@x.io", event=f"b{n}"),
                request(f"q{n}@x.io", f"+1 555 02{n:02}", event=f"c{n}"),
            ]
            reconcile_batch(conn, batch)
        plans = conn.execute("SELECT statement, custom_plans FROM pg_prepared_statements").fetchall()
    statements = [(" ".join(statement.split()), custom) for statement, custom in plans]
    assert any("clock_timestamp()" in s for s, _ in statements), statements  # the contact ids' statement
    assert any(s.startswith("INSERT INTO merge_log") for s, _ in statements), statements
    replanned = [(s[:60], custom) for s, custom in statements if custom > 5]
    assert replanned == []
