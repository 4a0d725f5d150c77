"""`identity erase` and `identity explain`: the API's documents, as JSON or as readable text."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from consumer.core.erasure import erase
from consumer.core.explain import explain
from tests.core.test_erasure import DOC, GUARD, MCFLY, hillvalley
from tests.support.processes import identity


def test_explain_prints_the_tree_and_the_path(db: psycopg.Connection[Any], database_url: str) -> None:
    hillvalley(db)

    text = identity(database_url, "explain", "--email", " Doc@HillValley.edu", "--to", "2")
    as_json = identity(database_url, "explain", "--contact-id", "3", "--to", "2", "--json")

    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[:5] == [
        "Identity of contact #3: primary #1, 4 row(s), 4 email(s), 2 phone(s)",
        "#1 lorraine@hillvalley.edu 123456  "
        "[primary, created 2023-04-01T00:00:00+00:00 by urn:test:checkout e1]",
        "└─ #2 via phone 123456: mcfly@hillvalley.edu 123456  "
        "[secondary, created 2023-04-20T00:00:00+00:00 by urn:test:checkout e2]",
        "   └─ #3 via merge of mcfly@hillvalley.edu with 717171: doc@hillvalley.edu 717171  "
        "[secondary, created 2023-04-21T00:00:00+00:00 by urn:test:checkout e3]",
        "      └─ #4 via phone 717171: biff@hillvalley.edu 717171  "
        f"[secondary, created {explain(db, 4)['rows'][3]['createdAt']} by identity-api k1]",  # type: ignore[index]
    ]
    assert "Path #3 → #2:" in text.stdout
    assert "  #3 → #2 via merge of mcfly@hillvalley.edu with 717171" in text.stdout
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == json.loads(json.dumps(explain(db, 3, to=2)))


def test_explain_of_an_unknown_value_fails(db: psycopg.Connection[Any], database_url: str) -> None:
    done = identity(database_url, "explain", "--phone", "5550100")
    assert done.returncode == 1
    assert "no live contact" in done.stderr


def test_erase_dry_run_then_for_real(db: psycopg.Connection[Any], database_url: str) -> None:
    hillvalley(db)

    dry = identity(database_url, "erase", "--email", MCFLY, "--dry-run")
    real = identity(database_url, "erase", "--email", MCFLY, "--json")

    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "dry run, nothing changed: rows erased: #2",
        "  identity #1: lorraine@hillvalley.edu, 123456",
        "  identity #3, #4: doc@hillvalley.edu, biff@hillvalley.edu, 717171",
    ]
    assert real.returncode == 0, real.stderr
    document = json.loads(real.stdout)
    assert (document["erasedContactIds"], [v["primaryContactId"] for v in document["identities"]]) == (
        [2],
        [1, 3],
    )
    assert erase(db, "email", MCFLY, "test", GUARD).erased_contact_ids == ()
    assert DOC in identity(database_url, "explain", "--contact-id", "4").stdout
