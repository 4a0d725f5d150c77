"""`identity block add|remove|list` and `identity guard scan`, run as an operator runs them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from consumer.core import Guardrails, check_invariants, reconcile
from consumer.migrate import migrate
from tests.core.helpers import request
from tests.support.processes import identity
from tests.support.services import fresh_database


@pytest.fixture
def url(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as fresh:
        migrate(fresh)
        yield fresh


def primaries(conn: psycopg.Connection[Any]) -> int:
    (count,) = conn.execute("SELECT count(*) FROM contact WHERE linked_id IS NULL").fetchone() or (0,)
    conn.rollback()
    return int(count)


def test_block_add_list_and_remove(url: str) -> None:
    with psycopg.connect(url) as conn:
        reconcile(conn, request("doc@hillvalley.edu", "555 0100", event="e1"))
        reconcile(conn, request("marty@hillvalley.edu", "555 0100", event="e2"))

        added = identity(url, "block", "add", "--phone", "(555) 0100", "--note", "the till")
        assert added.returncode == 0, added.stderr
        assert added.stdout.splitlines() == ["blocked phone as block 1", "  split identity 1 into 2"]
        assert primaries(conn) == 2

        again = identity(url, "block", "add", "--phone", "5550100")
        assert (again.returncode, again.stderr) == (1, "error: the value is blocked already\n")

        listed = identity(url, "block", "list", "--json")
        (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert {k: row[k] for k in ("id", "kind", "value", "reason", "note", "added_by")} == {
            "id": 1,
            "kind": "phone",
            "value": "5550100",
            "reason": "operator",
            "note": "the till",
            "added_by": "identity CLI",
        }

        removed = identity(url, "block", "remove", "1")
        assert removed.stdout.splitlines() == ["removed block 1", "  merged identities 2 into 1 (2 rows)"]
        assert primaries(conn) == 1
        assert identity(url, "block", "list").stdout == ""
        assert "removed" in identity(url, "block", "list", "--all").stdout
        assert identity(url, "block", "remove", "1").returncode == 1


def test_guard_scan_blocks_old_fan_out_and_a_dry_run_changes_nothing(url: str) -> None:
    loose = Guardrails(max_links_per_value=1000)
    with psycopg.connect(url) as conn:
        for n in range(25):  # stored before the guardrails: one identity of 25 buyers
            reconcile(conn, request(f"buyer{n}@x.io", "5550100", event=f"e{n}"), loose)

        dry = identity(url, "guard", "scan", "--dry-run")
        assert dry.stdout.splitlines()[0] == "would block phone 5550100 (fan_out)"
        assert dry.stdout.splitlines()[-1] == "1 value(s) would block (dry run: nothing changed)"
        assert primaries(conn) == 1

        scan = identity(url, "guard", "scan")
        assert scan.returncode == 0, scan.stderr
        blocked, split = scan.stdout.splitlines()[:2]
        assert blocked.startswith("blocked phone 5550100 (fan_out) as block ")
        assert split == "  split identity 1 into 25"
        assert primaries(conn) == 25
        assert check_invariants(conn) == []
