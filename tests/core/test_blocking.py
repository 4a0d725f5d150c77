"""Rules 12-16 by example: blocked values, automatic blocks, splits, unblocks and the scan of old data."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from consumer.contract import SplitData
from consumer.core import Guardrails, IdentifiersBlocked, check_invariants, reconcile
from consumer.core.blocking import BlockRefused, block_value, guard_scan, list_blocks, unblock_value
from consumer.core.graph import Merge
from tests.core.helpers import at, contacts, execute, outbox, request, table

GUARD = Guardrails()


def identities(conn: psycopg.Connection[Any]) -> set[frozenset[int]]:
    by_primary: dict[int, set[int]] = {}
    for row in contacts(conn):
        if row.deleted_at is None:
            by_primary.setdefault(row.linked_id or row.id, set()).add(row.id)
    return {frozenset(ids) for ids in by_primary.values()}


def events(conn: psycopg.Connection[Any], event_type: str) -> list[dict[str, Any]]:
    return [row["payload"]["data"] for row in outbox(conn) if row["event_type"] == event_type]


# --- rule 12: blocked values ------------------------------------------------------------------------


def test_an_input_with_only_blocked_values_is_refused_and_leaves_no_trace(
    db: psycopg.Connection[Any],
) -> None:
    block_value(db, "phone", "5550100", GUARD, added_by="test")
    with pytest.raises(IdentifiersBlocked):
        reconcile(db, request(None, "555-0100", event="e1"))
    assert contacts(db) == []
    assert table(db, "SELECT * FROM processed_event") == [], "not recorded: replayable after an unblock"


def test_a_blocked_value_beside_a_good_one_is_ignored_and_not_stored(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("doc@hillvalley.edu", "5550100", event="e1"))
    block_value(db, "phone", "5550100", GUARD, added_by="test")
    answer = reconcile(db, request("marty@hillvalley.edu", "5550100", event="e2"))
    assert answer.contact.primary_id == 2, "not matched through the blocked phone"
    assert [(r.email, r.phone_number) for r in contacts(db)][1] == ("marty@hillvalley.edu", None)


@pytest.mark.parametrize(
    ("email", "phone"),
    [("test@test.com", None), ("noreply@shop.io", None), ("x@shop.test", None), (None, "0000000000")],
)
def test_junk_patterns_are_blocked(db: psycopg.Connection[Any], email: str | None, phone: str | None) -> None:
    with pytest.raises(IdentifiersBlocked):
        reconcile(db, request(email, phone, event="e1"))
    relaxed = Guardrails(junk_patterns=False)
    assert reconcile(db, request(email, phone, event="e1"), relaxed).contact_id == 1


@pytest.mark.parametrize(
    ("email", "phone"),
    [("lorraine@hillvalley.edu", "123456"), ("a@b.io", "919191"), ("ada@example.com", "+1 555 0100")],
)
def test_junk_patterns_spare_the_worked_examples(db: psycopg.Connection[Any], email: str, phone: str) -> None:
    assert reconcile(db, request(email, phone, event="e1")).contact_id == 1


def test_blocking_twice_or_a_junk_value_is_refused(db: psycopg.Connection[Any]) -> None:
    block_value(db, "email", "doc@hillvalley.edu", GUARD, added_by="test")
    for kind, value in (("email", "doc@hillvalley.edu"), ("phone", "1111111111")):
        with pytest.raises(BlockRefused) as refused:
            block_value(db, kind, value, GUARD, added_by="test")  # type: ignore[arg-type]
        assert refused.value.code == "already_blocked"


# --- rules 13-15: automatic blocks and splits -------------------------------------------------------


def test_a_hub_phone_is_blocked_at_its_21st_email_and_its_identity_split(db: psycopg.Connection[Any]) -> None:
    for n in range(20):
        reconcile(db, request(f"buyer{n}@x.io", "5550100", event=f"e{n}", when=at(f"2023-01-{n + 1:02d}")))
    assert identities(db) == {frozenset(range(1, 21))}, "20 emails on one phone: a household still"

    answer = reconcile(db, request("buyer20@x.io", "5550100", event="e20", when=at("2023-02-01")))

    assert answer.contact == answer.contact.__class__(21, ("buyer20@x.io",), (), ())
    assert identities(db) == {frozenset({i}) for i in range(1, 22)}
    (block,) = list_blocks(db)
    assert (block.kind, block.value, block.reason, block.identity_id) == ("phone", "5550100", "fan_out", 1)
    (split,) = [SplitData.model_validate(data) for data in events(db, "identity.split")]
    assert (split.cause.type, split.cause.id, split.formerPrimaryId) == ("value_blocked", block.id, 1)
    assert [i.primaryContactId for i in split.identities] == list(range(1, 21))
    assert check_invariants(db) == []


def test_an_identity_past_the_cap_loses_its_most_linked_value(db: psycopg.Connection[Any]) -> None:
    guard = Guardrails(max_identifiers_per_identity=6)
    # A chain of rows e0-100-e1-101-e2-102: six values, and e3 would be the seventh.
    for n, (email, phone) in enumerate([("e0@x.io", "100"), ("e1@x.io", "100"), ("e1@x.io", "101")]):
        reconcile(db, request(email, phone, event=f"c{n}", when=at(f"2023-01-0{n + 1}")), guard)
    reconcile(db, request("e2@x.io", "101", event="c3", when=at("2023-01-04")), guard)
    reconcile(db, request("e2@x.io", "102", event="c4", when=at("2023-01-05")), guard)

    reconcile(db, request("e3@x.io", "102", event="c5", when=at("2023-01-06")), guard)

    # 100, e1, 101 and e2 each link two values; "100" is the lowest of them and goes.
    assert [(b.kind, b.value, b.reason) for b in list_blocks(db)] == [("phone", "100", "identity_cap")]
    assert check_invariants(db, guard) == []
    assert max(len(i) for i in identities(db)) < 6


def test_a_bridge_merge_links_until_its_value_is_blocked_and_again_once_unblocked(
    db: psycopg.Connection[Any],
) -> None:
    reconcile(db, request("doc@hillvalley.edu", "111", event="e1", when=at("2023-01-01")))
    reconcile(db, request("marty@hillvalley.edu", "222", event="e2", when=at("2023-01-02")))
    reconcile(db, request("marty@hillvalley.edu", "111", event="bridge"))  # rule 7: no row inserted
    assert identities(db) == {frozenset({1, 2})}

    blocked = block_value(db, "phone", "111", GUARD, added_by="ops", note="shop till")
    assert identities(db) == {frozenset({1}), frozenset({2})}
    assert [s.former_primary_id for s in blocked.splits] == [1]

    merged = unblock_value(db, blocked.block_id, GUARD, removed_by="ops")
    assert identities(db) == {frozenset({1, 2})}
    assert [m for m, _ in merged.merges] == [Merge(1, (2,), ())]
    (event,) = events(db, "identity.merged")[-1:]
    assert (event["survivingPrimaryId"], event["mergedPrimaryIds"]) == (1, [2])
    assert list_blocks(db) == []
    assert check_invariants(db) == []


def test_unblock_of_an_unknown_block_is_refused(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(BlockRefused) as refused:
        unblock_value(db, 42, GUARD, removed_by="ops")
    assert refused.value.code == "not_found"


# --- identity guard scan ----------------------------------------------------------------------------


def test_guard_scan_splits_an_old_identity_of_10000_rows_in_one_transaction(
    db: psycopg.Connection[Any],
) -> None:
    """Data stored before the guardrails: 10,000 checkouts of one till phone, all one identity."""
    execute(
        db,
        "INSERT INTO contact (id, email, phone_number, linked_id, link_precedence, created_at, updated_at,"
        " source, source_event_id)"
        " SELECT n, 'buyer' || n || '@x.io', '5550100', nullif(1, n), CASE n WHEN 1 THEN 'primary'"
        " ELSE 'secondary' END, now(), now(), 'old', 'e' || n FROM generate_series(1, 10000) AS n",
    )
    execute(db, "SELECT setval(pg_get_serial_sequence('contact', 'id'), 10000)")

    dry = guard_scan(db, GUARD, dry_run=True)
    assert [(kind, value, reason) for kind, value, reason, _ in dry.blocks] == [
        ("phone", "5550100", "fan_out")
    ]
    assert list_blocks(db) == [], "a dry run changes nothing"
    assert len(identities(db)) == 1, "a dry run changes nothing"

    scan = guard_scan(db, GUARD)

    ((_, _, _, result),) = scan.blocks
    (split,) = result.splits
    assert len(split.identities) == 10_000
    assert len(identities(db)) == 10_000
    assert len(events(db, "identity.split")) == 1
    assert check_invariants(db) == []
    assert guard_scan(db, GUARD).blocks == (), "nothing left to do"
