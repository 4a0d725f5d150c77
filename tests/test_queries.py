"""consumer/queries.py: the statements run per event, per call and per relay round plan as index
lookups on a new deployment's never analyzed tables, empty or young.

A prepared statement's generic plan is made from the statistics of that moment and kept until the
table is first analyzed (a minute or more after a deployment): one planned as a scan of an empty table
keeps scanning as the table grows. With no statistics the planner guesses, and its guesses change with
the table's size on disk: a generic plan made at a thousand rows once found emails by reading a whole
index of every live row. EXPLAIN (GENERIC_PLAN) shows that plan (PostgreSQL 16 and later).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from consumer import queries
from consumer.migrate import migrate
from tests.support.services import fresh_database

HOT_PATH = [
    "TRY_LOCK_KEYS",
    "LOCK_KEYS",
    "PROCESSED_EVENTS",
    "LOOKUP_PRIMARIES",
    "BLOCKED_HASHES",
    "LOCK_PRIMARIES",
    "LOCK_PRIMARIES_SKIP_LOCKED",
    "LOCK_PRIMARIES_NOWAIT",
    "CLUSTERS_OF_PRIMARIES",
    "CLOCK_AND_CONTACT_IDS",
    "INSERT_CONTACTS",
    "UPDATE_LINKS",
    "INSERT_MERGES",
    "INSERT_SPLITS",
    "INSERT_PROCESSED",
    "INSERT_OUTBOX",
    "CONTACT_VALUES",
    "MERGE_BRIDGES",
    "CLUSTER_OF_CONTACT",
    "IDENTITY_ROWS",
    "FIND_KEY",
    "TAKE_TOKENS",
    "INSERT_AUDIT",
    "OUTBOX_UNPUBLISHED",
    "OUTBOX_MARK_PUBLISHED",
]


def numbered(query: str) -> str:
    """The statement with PostgreSQL's $n placeholders, as psycopg prepares it."""
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        name = match.group(1) or str(len(numbers))
        return f"${numbers.setdefault(name, len(numbers) + 1)}"

    return re.sub(r"%\((\w+)\)s|%s", number, query)


def test_numbered_placeholders_follow_psycopg() -> None:
    assert numbered("a = %s AND b = %s") == "a = $1 AND b = $2"
    assert numbered("a = %(x)s AND b = %(y)s OR c = %(x)s") == "a = $1 AND b = $2 OR c = $1"


# Rows of a young deployment: primaries, and a secondary for every tenth.
YOUNG_CONTACTS = """
INSERT INTO contact (id, email, phone_number, linked_id, link_precedence, created_at, updated_at, source,
                     source_event_id)
SELECT g, 'young' || g || '@shop.example', '+1777' || lpad(g::text, 8, '0'),
       CASE WHEN g %% 10 = 0 THEN g - 1 END, CASE WHEN g %% 10 = 0 THEN 'secondary' ELSE 'primary' END,
       now(), now(), 'urn:test:young', g::text
FROM generate_series(1, %s) AS g"""


@pytest.fixture(scope="module", params=[0, 1_000, 10_000], ids=lambda n: f"{n}_contacts")
def unanalyzed_database(
    database_url: str, request: pytest.FixtureRequest
) -> Iterator[psycopg.Connection[Any]]:
    with young_database(database_url, request.param, analyzed_empty=False) as conn:
        yield conn


@pytest.fixture(scope="module", params=[300, 10_000], ids=lambda n: f"{n}_contacts")
def analyzed_empty_database(
    database_url: str, request: pytest.FixtureRequest
) -> Iterator[psycopg.Connection[Any]]:
    with young_database(database_url, request.param, analyzed_empty=True) as conn:
        yield conn


@contextmanager
def young_database(
    database_url: str, contacts: int, *, analyzed_empty: bool
) -> Iterator[psycopg.Connection[Any]]:
    with fresh_database(database_url) as url:
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            if conn.info.server_version < 160000:
                pytest.skip("EXPLAIN (GENERIC_PLAN) needs PostgreSQL 16 or later")
            if analyzed_empty:  # as autovacuum's first ANALYZE may find a new deployment's tables
                conn.execute("ANALYZE")
            conn.execute("ALTER TABLE contact SET (autovacuum_enabled = off)")  # no ANALYZE meanwhile
            conn.execute(YOUNG_CONTACTS, [contacts])
            yield conn


def scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a JSON plan that reads a table or an index."""
    if "Scan" in node["Node Type"]:
        yield node
    for child in node.get("Plans", []):
        yield from scans(child)


def assert_index_lookups(conn: psycopg.Connection[Any], name: str, *, prefer_indexes: bool) -> None:
    with conn.transaction(force_rollback=True):
        if prefer_indexes:
            conn.execute(queries.PREFER_INDEXES, [True])
        row = conn.execute(
            f"EXPLAIN (GENERIC_PLAN, FORMAT JSON) {numbered(getattr(queries, name))}"
        ).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    for scan in scans(plan):
        assert scan["Node Type"] != "Seq Scan", plan
        # A contact index read without a condition is the whole index: a scan of every customer.
        if scan.get("Index Name", "").startswith("contact_"):
            assert "Index Cond" in scan, plan


@pytest.mark.parametrize("name", HOT_PATH)
def test_a_hot_statement_plans_as_index_lookups_before_any_statistics(
    unanalyzed_database: psycopg.Connection[Any], name: str
) -> None:
    assert_index_lookups(unanalyzed_database, name, prefer_indexes=False)


# Authentication's statements run outside the core's transactions, on tables of a few rows.
AUTH = {"FIND_KEY", "TAKE_TOKENS", "INSERT_AUDIT"}


@pytest.mark.parametrize("name", [name for name in HOT_PATH if name not in AUTH])
def test_a_hot_statement_plans_as_index_lookups_on_tables_analyzed_while_empty(
    analyzed_empty_database: psycopg.Connection[Any], name: str
) -> None:
    """The core's transactions and the relay's session set `PREFER_INDEXES`: without it, statistics
    of empty tables make plans scan them whole, kept until the next ANALYZE."""
    assert_index_lookups(analyzed_empty_database, name, prefer_indexes=True)
