"""Rule 18: why an identity's contacts are linked: spanning tree, blocked values, history, paths."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from consumer.core import Guardrails, IdentifiersBlocked, reconcile
from consumer.core.blocklist import Blocklist
from consumer.core.erasure import erase
from consumer.core.explain import BadCursor, NotInIdentity, explain
from consumer.core.reconcile import with_identities
from consumer.normalize import Identifiers
from tests.core.helpers import contacts, execute, request, table
from tests.core.test_erasure import GUARD, LORRAINE, MCFLY, hillvalley
from tests.support.database import reset_database


def links(document: dict[str, Any]) -> dict[int, tuple[int, str, str | None, str | None] | None]:
    return {
        r["id"]: None
        if r["link"] is None
        else (r["link"]["to"], r["link"]["kind"], r["link"]["email"], r["link"]["phoneNumber"])
        for r in document["rows"]
    }


def test_why_doc_and_marty_are_one_customer(db: psycopg.Connection[Any]) -> None:
    hillvalley(db)

    document = explain(db, 3, to=2)

    assert document is not None
    assert document["contact"]["primaryContactId"] == 1
    assert [(r["id"], r["source"], r["sourceEventId"]) for r in document["rows"]] == [
        (1, "urn:test:checkout", "e1"),
        (2, "urn:test:checkout", "e2"),
        (3, "urn:test:checkout", "e3"),
        (4, "identity-api", "k1"),
    ]
    assert links(document) == {
        1: None,
        2: (1, "phone", None, "123456"),
        3: (2, "merge", MCFLY, "717171"),
        4: (3, "phone", None, "717171"),
    }
    assert document["path"] == {
        "from": 3,
        "to": 2,
        "steps": [{"from": 3, "to": 2, "link": {"kind": "merge", "email": MCFLY, "phoneNumber": "717171"}}],
    }
    (merge,) = document["history"]
    assert (merge["type"], merge["sourceEventId"], merge["email"], merge["phoneNumber"]) == (
        "merge",
        "e4",
        MCFLY,
        "717171",
    )
    assert (merge["survivingPrimaryId"], merge["mergedPrimaryIds"]) == (1, [3])
    assert document["blockedValues"] == []
    assert document["historyNext"] is None


def test_blocked_values_and_the_history_of_blocks_splits_and_erasures(db: psycopg.Connection[Any]) -> None:
    hillvalley(db)
    # A row stored before the guardrails, with a phone of the shipped junk patterns.
    execute(
        db,
        "INSERT INTO contact (id, email, phone_number, link_precedence, created_at, updated_at, source,"
        " source_event_id) VALUES (5, 'marty@hillvalley.edu', '0000000000', 'primary', now(), now(),"
        " 'legacy', 'l1')",
    )
    blocked = Identifiers(None, "717171")
    with_identities(db, [blocked], GUARD, lambda tx: tx.guard.block("phone", "717171", "operator", "test"))
    erase(db, "email", LORRAINE, "operator:test", GUARD)

    document = explain(db, 4)

    assert document is not None
    assert [r["id"] for r in document["rows"]] == [4]
    assert document["blockedValues"] == [
        {"kind": "phone", "value": "717171", "blockId": 1, "reason": "operator", "contactIds": [4]}
    ]
    # #4 was in #1's identity until the block split it off: #1's merge, the block and the split; not
    # what happened to #1 afterwards.
    assert [(h["type"], h["id"]) for h in document["history"]] == [("merge", 1), ("block", 1), ("split", 1)]
    block = document["history"][1]
    assert (block["value"], block["reason"], block["addedBy"]) == ("717171", "operator", "test")

    # #2 stayed with #1 until #1 was erased: the whole story, ending with the erasure's split.
    marty = explain(db, 2)
    assert marty is not None
    assert [(h["type"], h["id"]) for h in marty["history"]] == [
        ("merge", 1),
        ("block", 1),
        ("split", 1),
        ("erasure", 1),
        ("split", 2),
    ]
    assert marty["history"][1]["value"] is None, "a value #2's identity does not hold is not shown"
    assert marty["history"][4]["cause"] == {"type": "erasure", "id": 1}

    junk = explain(db, 5)
    assert junk is not None
    assert junk["blockedValues"] == [
        {"kind": "phone", "value": "0000000000", "blockId": None, "reason": "pattern", "contactIds": [5]}
    ]


def test_a_long_history_comes_in_pages_oldest_first(db: psycopg.Connection[Any]) -> None:
    hillvalley(db)
    execute(
        db,
        "INSERT INTO merge_log (source, source_event_id, surviving_primary_id, merged_primary_ids,"
        " relinked_contact_ids, merged_at)"
        " SELECT 'urn:test', 'old-' || i, 1, '{}', '{}', '2020-01-01'::timestamptz + i * interval '1 minute'"
        " FROM generate_series(1, 1500) AS i",
    )

    pages = []
    after = None
    while True:
        document = explain(db, 1, history_after=after)
        assert document is not None
        pages.append(document["history"])
        if (after := document["historyNext"]) is None:
            break

    assert [len(page) for page in pages] == [1000, 501]
    entries = [entry for page in pages for entry in page]
    assert [e["sourceEventId"] for e in entries] == [f"old-{i}" for i in range(1, 1501)] + ["e4"]
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)


def test_bad_requests(db: psycopg.Connection[Any]) -> None:
    hillvalley(db)
    reconcile(db, request("george@hillvalley.edu", "919191", event="e5"))

    assert explain(db, 99) is None
    with pytest.raises(NotInIdentity):
        explain(db, 1, to=5)
    with pytest.raises(BadCursor):
        explain(db, 1, history_after="not a cursor")


# --- property: every path is a chain of shared, non-blocked values ----------------------------------

EMAILS = [f"u{i}@hillvalley.edu" for i in range(6)]
PHONES = [f"55501{i:02d}" for i in range(6)]
SMALL = Guardrails(max_links_per_value=3, max_identifiers_per_identity=6)
inputs = st.lists(
    st.tuples(st.sampled_from([None, *EMAILS]), st.sampled_from([None, *PHONES])).filter(
        lambda pair: pair != (None, None)
    ),
    min_size=1,
    max_size=25,
)


@pytest.fixture(scope="module")
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url) as connection:
        yield connection


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=inputs, erased=st.sampled_from([None, *EMAILS[:2], *PHONES[:2]]))
def test_paths_connect_rows_through_shared_non_blocked_values(
    conn: psycopg.Connection[Any], pairs: list[tuple[str | None, str | None]], erased: str | None
) -> None:
    reset_database(conn)
    for n, (email, phone) in enumerate(pairs):
        with contextlib.suppress(IdentifiersBlocked):  # all its values blocked: nothing applied
            reconcile(conn, request(email, phone, event=f"e{n}"), SMALL)
    if erased is not None:
        erase(conn, "email" if "@" in erased else "phone", erased, "test", SMALL)
    rows = {r.id: r for r in contacts(conn) if r.deleted_at is None}
    bridges = {
        (m["email"], m["phone_number"]) for m in table(conn, "SELECT email, phone_number FROM merge_log")
    }
    blocked = Blocklist(conn, SMALL)
    note(f"rows {rows}")

    def shared(a: int, b: int, link: dict[str, Any]) -> bool:
        x, y = rows[a], rows[b]
        if link["kind"] == "email":
            return x.email == y.email == link["email"] and not blocked("email", link["email"])
        if link["kind"] == "phone":
            return x.phone_number == y.phone_number == link["phoneNumber"] and not blocked(
                "phone", link["phoneNumber"]
            )
        pair = (link["email"], link["phoneNumber"])
        return (
            pair in bridges
            and {link["email"], link["phoneNumber"]} <= {x.email, x.phone_number, y.email, y.phone_number}
            and not blocked("email", pair[0])
            and not blocked("phone", pair[1])
        )

    by_identity: dict[int, list[int]] = {}
    for r in rows.values():
        by_identity.setdefault(r.linked_id or r.id, []).append(r.id)
    for members in by_identity.values():
        start, goal = members[0], members[-1]
        document = explain(conn, start, to=goal, guard=SMALL)
        assert document is not None
        conn.rollback()
        assert sorted(r["id"] for r in document["rows"]) == sorted(members)
        for r in document["rows"]:
            if r["link"] is not None:
                assert shared(r["id"], r["link"]["to"], r["link"])
        found = document["path"]
        assert found is not None
        at = start
        for step in found["steps"]:
            assert step["from"] == at
            assert shared(step["from"], step["to"], step["link"])
            at = step["to"]
        assert at == goal
