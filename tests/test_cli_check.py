"""`identity check` and `check_invariants`: a consistent graph passes, each hand-made corruption is named."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import sql

from consumer.core import Guardrails, Violation, check_invariants, reconcile
from consumer.migrate import migrate
from tests.core.helpers import at, request
from tests.support.services import fresh_database

CHAIN = "secondary not linked straight to a live primary"
NOT_OLDEST = "primary is not the oldest row of its cluster"
SHARED_EMAIL = "email shared by two clusters"
SHARED_PHONE = "phone number shared by two clusters"
PRECEDENCE = "precedence disagrees with linked_id"
COMPONENT = "identity is not one connected component of the link graph"


@pytest.fixture
def graph(database_url: str) -> Iterator[tuple[str, psycopg.Connection[Any]]]:
    """A fresh database holding, through the core, a consistent graph:

    cluster 1: 1 (a1, 111, primary), 2 (a2, 111 -> 1), 3 (a2, 333 -> 1); cluster 4: 4 (b, 444).
    """
    with fresh_database(database_url) as url, psycopg.connect(url) as conn:
        migrate(url)
        for n, (email, phone) in enumerate(
            [("a1@x.io", "111"), ("a2@x.io", "111"), ("a2@x.io", "333"), ("b@x.io", "444")], start=1
        ):
            reconcile(conn, request(email, phone, event=f"e{n}", when=at(f"2023-01-0{n}")))
        yield url, conn


def corrupt(conn: psycopg.Connection[Any], *statements: LiteralString) -> None:
    for statement in statements:
        conn.execute(statement)
    conn.commit()


def drop_precedence_constraint(conn: psycopg.Connection[Any]) -> None:
    """The schema forbids this corruption; the check must still catch it on a database that allows it."""
    (name,) = conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'contact'::regclass AND contype = 'c'"
        " AND pg_get_constraintdef(oid) LIKE '%link_precedence%linked_id IS NULL%'"
    ).fetchone() or (None,)
    assert name is not None
    conn.execute(sql.SQL("ALTER TABLE contact DROP CONSTRAINT {}").format(sql.Identifier(name)))
    conn.commit()


def check(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, ...]]:
    violations = check_invariants(conn)
    conn.rollback()
    assert all(v.count == len(v.contact_ids) for v in violations)
    return {v.rule: v.contact_ids for v in violations}


def run_check(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", "check"],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_consistent_graph_passes(graph: tuple[str, psycopg.Connection[Any]]) -> None:
    url, conn = graph
    assert check_invariants(conn) == []
    conn.rollback()
    result = run_check(url)
    assert (result.returncode, result.stdout) == (0, "ok: every invariant holds\n")


def test_empty_database_passes(database_url: str) -> None:
    with fresh_database(database_url) as url:
        migrate(url)
        assert run_check(url).returncode == 0


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        pytest.param(
            ["UPDATE contact SET linked_id = 2 WHERE id = 3"],
            # Row 3 now hangs off secondary 2, and so a2@x.io seems to sit in clusters 1 and 2.
            {CHAIN: (3,), SHARED_EMAIL: (2,), COMPONENT: (1, 2)},
            id="chained-secondary",
        ),
        pytest.param(
            ["UPDATE contact SET created_at = '2022-12-31T00:00:00Z' WHERE id = 2"],
            {NOT_OLDEST: (1,)},
            id="wrong-primary",
        ),
        pytest.param(
            ["UPDATE contact SET email = 'a1@x.io' WHERE id = 4"],
            {SHARED_EMAIL: (1,), COMPONENT: (1, 4)},
            id="shared-email",
        ),
        pytest.param(
            ["UPDATE contact SET phone_number = '333' WHERE id = 4"],
            {SHARED_PHONE: (3,), COMPONENT: (1, 4)},
            id="shared-phone",
        ),
        pytest.param(
            ["UPDATE contact SET deleted_at = now() WHERE id = 1"], {CHAIN: (2, 3)}, id="deleted-primary"
        ),
        pytest.param(
            ["UPDATE contact SET linked_id = NULL WHERE id = 3"],
            # A second primary inside the cluster: its email is now in two clusters.
            {PRECEDENCE: (3,), SHARED_EMAIL: (2,), COMPONENT: (1, 3)},
            id="secondary-without-link",
        ),
        pytest.param(
            ["UPDATE contact SET link_precedence = 'primary' WHERE id = 2"],
            {PRECEDENCE: (2,)},
            id="precedence",
        ),
    ],
)
def test_each_corruption_is_named(
    graph: tuple[str, psycopg.Connection[Any]],
    statements: list[LiteralString],
    expected: dict[str, tuple[int, ...]],
) -> None:
    _, conn = graph
    drop_precedence_constraint(conn)
    corrupt(conn, *statements)
    assert check(conn) == expected


def test_examples_are_capped_but_counted(graph: tuple[str, psycopg.Connection[Any]]) -> None:
    _, conn = graph
    hub = Guardrails(max_links_per_value=100)  # 26 emails on one phone: no fan-out block here
    for n in range(25):
        reconcile(conn, request(f"more{n}@x.io", "444", event=f"more{n}"), hub)
    corrupt(conn, "UPDATE contact SET deleted_at = now() WHERE id = 4")
    (violation,) = check_invariants(conn, hub)
    conn.rollback()
    assert violation == Violation(CHAIN, tuple(range(5, 25)), 25)


def test_cli_reports_every_violated_rule_and_exits_1(graph: tuple[str, psycopg.Connection[Any]]) -> None:
    url, conn = graph
    drop_precedence_constraint(conn)
    corrupt(
        conn,
        "UPDATE contact SET linked_id = 2 WHERE id = 3",
        "UPDATE contact SET created_at = '2022-12-31T00:00:00Z' WHERE id = 2",
        "UPDATE contact SET phone_number = '111', link_precedence = 'secondary' WHERE id = 4",
    )

    result = run_check(url)

    assert result.returncode == 1
    assert sorted(result.stdout.splitlines()) == sorted(
        [
            f"VIOLATION {CHAIN}: 1 contact(s), e.g. ids 3",
            f"VIOLATION {NOT_OLDEST}: 1 contact(s), e.g. ids 1",
            f"VIOLATION {SHARED_EMAIL}: 1 contact(s), e.g. ids 2",
            f"VIOLATION {SHARED_PHONE}: 1 contact(s), e.g. ids 1",
            f"VIOLATION {PRECEDENCE}: 1 contact(s), e.g. ids 4",
            f"VIOLATION {COMPONENT}: 3 contact(s), e.g. ids 1, 2, 4",
        ]
    )
    assert "@" not in result.stdout + result.stderr, "the report names ids, never personal data"


def test_cli_does_not_pass_a_database_without_the_schema(database_url: str) -> None:
    with fresh_database(database_url) as url:
        result = run_check(url)
    assert result.returncode == 2, "an error is not a verdict: exit 2, not 1"
    assert "ok" not in result.stdout
    assert 'relation "contact" does not exist' in result.stderr
