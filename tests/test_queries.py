"""consumer/queries.py: the statements run per event, per call and per relay round plan as index
lookups on a new deployment's empty, never analyzed tables.

A prepared statement's generic plan is made from the statistics of that moment and kept until the
table is first analyzed (a minute or more after a deployment): one planned as a scan of an empty table
keeps scanning as the table grows. EXPLAIN (GENERIC_PLAN) shows that plan (PostgreSQL 16 and later).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
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
    "ALLOCATE_CONTACT_IDS",
    "INSERT_CONTACTS",
    "UPDATE_LINKS",
    "INSERT_MERGES",
    "INSERT_SPLITS",
    "INSERT_PROCESSED",
    "INSERT_OUTBOX",
    "FAN_OUT_VALUES",
    "IDENTITIES_OVER_CAP",
    "CONTACT_VALUES",
    "MERGE_BRIDGES",
    "CLUSTER_OF_CONTACT",
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


@pytest.fixture(scope="module")
def empty_database(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with fresh_database(database_url) as url:
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            if conn.info.server_version < 160000:
                pytest.skip("EXPLAIN (GENERIC_PLAN) needs PostgreSQL 16 or later")
            yield conn


@pytest.mark.parametrize("name", HOT_PATH)
def test_a_hot_statement_plans_as_index_lookups_before_any_statistics(
    empty_database: psycopg.Connection[Any], name: str
) -> None:
    with empty_database.transaction(force_rollback=True):
        plan = "\n".join(
            str(row[0])
            for row in empty_database.execute(f"EXPLAIN (GENERIC_PLAN) {numbered(getattr(queries, name))}")
        )
    assert "Seq Scan" not in plan, plan
