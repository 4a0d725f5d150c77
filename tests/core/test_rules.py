"""One test per reconciliation rule (DESIGN.md rules 3-11) and per edge case around it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from consumer.contract import MERGED_TYPE, RESOLVED_TYPE, Outcome
from consumer.core import (
    ContactView,
    IdempotencyKeyReused,
    KeyConflict,
    Merge,
    Resolution,
    check_invariants,
    contact_view,
    reconcile,
    reconcile_batch,
)
from tests.core.helpers import at, contacts, counts, execute, merge_log, outbox, request
from tests.support import SOURCE


def links(conn: psycopg.Connection[Any]) -> dict[int, int | None]:
    return {row.id: row.linked_id for row in contacts(conn)}


@pytest.fixture(autouse=True)
def consistent_afterwards(db: psycopg.Connection[Any]) -> Iterator[None]:
    """Whatever a test does through the core, rules 3 and 7 hold at its end."""
    yield
    if db.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
        db.rollback()
    assert check_invariants(db) == []
    db.rollback()


# --- rules 4-6 --------------------------------------------------------------------------------------


def test_first_request_creates_a_primary(db: psycopg.Connection[Any]) -> None:
    answer = reconcile(db, request("a@x.io", "111", event="e1"))
    assert answer == Resolution(Outcome.CREATED_PRIMARY, 1, ContactView(1, ("a@x.io",), ("111",), ()), None)
    (row,) = contacts(db)
    assert (row.linked_id, row.link_precedence, row.source, row.source_event_id) == (
        None,
        "primary",
        SOURCE,
        "e1",
    )
    assert row.created_at == row.updated_at, "an API-style request (no event time) is created now"


def test_repeated_request_creates_nothing(db: psycopg.Connection[Any]) -> None:
    first = reconcile(db, request("a@x.io", "111", event="e1"))
    rows = contacts(db)
    again = reconcile(db, request("a@x.io", "111", event="e2"))
    assert again == Resolution(Outcome.MATCHED, None, first.contact, None)
    assert contacts(db) == rows


def test_single_field_request_for_known_data_creates_nothing(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("a@x.io", "111", event="e1"))
    reconcile(db, request("b@x.io", "111", event="e2"))
    rows = contacts(db)
    view = ContactView(1, ("a@x.io", "b@x.io"), ("111",), (2,))
    for n, (email, phone) in enumerate([("b@x.io", None), (None, "111"), ("a@x.io", None)]):
        assert reconcile(db, request(email, phone, event=f"s{n}")) == Resolution(
            Outcome.MATCHED, None, view, None
        )
    assert contacts(db) == rows


def test_new_value_on_a_match_creates_a_secondary(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("a@x.io", "111", event="e1"))
    new_phone = reconcile(db, request("a@x.io", "222", event="e2"))
    new_email = reconcile(db, request("b@x.io", None, event="e3"))
    assert new_phone.outcome is Outcome.CREATED_SECONDARY
    assert new_phone.contact_id == 2
    assert new_email.outcome is Outcome.CREATED_PRIMARY, "an email alone that matches nothing is new"
    only_email = reconcile(db, request("c@x.io", "222", event="e4"))
    assert only_email == Resolution(
        Outcome.CREATED_SECONDARY, 4, ContactView(1, ("a@x.io", "c@x.io"), ("111", "222"), (2, 4)), None
    )
    assert links(db) == {1: None, 2: 1, 3: None, 4: 1}


def test_match_on_a_secondary_links_to_the_primary(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("lorraine@x.io", "123456", event="e1"))
    reconcile(db, request("mcfly@x.io", "123456", event="e2"))
    answer = reconcile(db, request("mcfly@x.io", "999999", event="e3"))
    assert answer == Resolution(
        Outcome.CREATED_SECONDARY,
        3,
        ContactView(1, ("lorraine@x.io", "mcfly@x.io"), ("123456", "999999"), (2, 3)),
        None,
    )
    assert links(db) == {1: None, 2: 1, 3: 1}, "never a chain through the matched secondary"


def test_missing_values_never_match_each_other(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("a@x.io", None, event="e1"))
    reconcile(db, request("b@x.io", "", event="e2"))
    reconcile(db, request(None, "111", event="e3"))
    reconcile(db, request("   ", "222", event="e4"))
    assert links(db) == {1: None, 2: None, 3: None, 4: None}
    assert [(r.email, r.phone_number) for r in contacts(db)] == [
        ("a@x.io", None),
        ("b@x.io", None),
        (None, "111"),
        (None, "222"),
    ]
    assert reconcile(db, request("a@x.io", " \t", event="e5")).outcome is Outcome.MATCHED
    assert len(contacts(db)) == 4


def test_email_case_and_phone_formatting_do_not_matter(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request(" Lorraine@HillValley.EDU ", "(555) 456-7890", event="e1"))
    answer = reconcile(db, request("lorraine@hillvalley.edu", "555.456.7890", event="e2"))
    assert answer.outcome is Outcome.MATCHED
    assert [(r.email, r.phone_number) for r in contacts(db)] == [("lorraine@hillvalley.edu", "5554567890")]


def test_numeric_phone_matches_its_string(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("a@x.io", "123456", event="e1"))
    assert reconcile(db, request(None, 123456, event="e2")).outcome is Outcome.MATCHED
    assert reconcile(db, request(None, 123456.0, event="e3")).outcome is Outcome.MATCHED
    assert reconcile(db, request("b@x.io", 123456, event="e4")).outcome is Outcome.CREATED_SECONDARY
    assert [r.phone_number for r in contacts(db)] == ["123456", "123456"]


# --- rule 7: merges ---------------------------------------------------------------------------------


@pytest.mark.parametrize("older", ["email", "phone"])
def test_merge_keeps_the_older_cluster_whichever_side_it_is(db: psycopg.Connection[Any], older: str) -> None:
    # Ids run against age: the cluster created first in the table is the younger one.
    email_day, phone_day = ("2023-01-02", "2023-01-05") if older == "email" else ("2023-01-05", "2023-01-02")
    reconcile(db, request("e@x.io", "111", event="e1", when=at(email_day)))
    reconcile(db, request("p@x.io", "222", event="e2", when=at(phone_day)))
    before = contacts(db)

    answer = reconcile(db, request("e@x.io", "222", event="e3"))

    winner, loser = (1, 2) if older == "email" else (2, 1)
    assert answer.merge == Merge(winner, (loser,), ())
    assert answer.outcome is Outcome.MERGED
    assert answer.contact_id is None
    first, second = (
        (("e@x.io", "111"), ("p@x.io", "222")) if older == "email" else (("p@x.io", "222"), ("e@x.io", "111"))
    )
    assert answer.contact == ContactView(winner, (first[0], second[0]), (first[1], second[1]), (loser,))
    after = {r.id: r for r in contacts(db)}
    assert len(after) == 2
    assert after[winner] == before[winner - 1], "the surviving primary is not touched"
    assert (after[loser].linked_id, after[loser].link_precedence) == (winner, "secondary")
    assert after[loser].updated_at > before[loser - 1].updated_at


def test_equal_creation_times_fall_back_to_the_id(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("a@x.io", "111", event="e1", when=at("2023-01-01")))
    reconcile(db, request("b@x.io", "222", event="e2", when=at("2023-01-01")))
    assert reconcile(db, request("b@x.io", "111", event="e3")).merge == Merge(1, (2,), ())


def test_demoted_primary_secondaries_are_relinked_to_the_winner(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("old@x.io", "111", event="e1", when=at("2023-01-01")))
    reconcile(db, request("old2@x.io", "111", event="e2", when=at("2023-01-02")))
    reconcile(db, request("new@x.io", "222", event="e3", when=at("2023-02-01")))
    reconcile(db, request("new2@x.io", "222", event="e4", when=at("2023-02-02")))
    reconcile(db, request("new3@x.io", "222", event="e5", when=at("2023-02-03")))
    before = {r.id: r for r in contacts(db)}

    answer = reconcile(db, request("new3@x.io", "111", event="bridge"))

    merge = Merge(1, (3,), (4, 5))
    assert answer.merge == merge
    assert answer.contact == ContactView(
        1, ("old@x.io", "old2@x.io", "new@x.io", "new2@x.io", "new3@x.io"), ("111", "222"), (2, 3, 4, 5)
    )
    after = {r.id: r for r in contacts(db)}
    assert {i: r.linked_id for i, r in after.items()} == {1: None, 2: 1, 3: 1, 4: 1, 5: 1}
    assert [i for i in after if after[i].updated_at != before[i].updated_at] == [3, 4, 5]
    merged_events = [row for row in outbox(db) if row["event_type"] == MERGED_TYPE]
    assert [(row["message_key"], row["payload"]["data"]) for row in merged_events] == [
        (
            "1",
            {
                "sourceEventId": "bridge",
                "survivingPrimaryId": 1,
                "mergedPrimaryIds": [3],
                "relinkedContactIds": [4, 5],
                "contact": answer.contact.document(),
            },
        )
    ]
    assert [
        (m["surviving_primary_id"], m["merged_primary_ids"], m["relinked_contact_ids"]) for m in merge_log(db)
    ] == [(1, [3], [4, 5])]


def test_three_clusters_merge_transitively_into_the_oldest(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("a@x.io", "1", event="a", when=at("2023-01-01")))  # 1
    reconcile(db, request("b@x.io", "2", event="b", when=at("2023-01-02")))  # 2
    reconcile(db, request("b3@x.io", "2", event="b3", when=at("2023-01-04")))  # 3 -> 2
    reconcile(db, request("c@x.io", "3", event="c", when=at("2023-01-03")))  # 4
    reconcile(db, request("c5@x.io", "3", event="c5", when=at("2023-01-05")))  # 5 -> 4

    first = reconcile(db, request("b@x.io", "3", event="bridge1"))
    assert first.merge == Merge(2, (4,), (5,))
    assert links(db) == {1: None, 2: None, 3: 2, 4: 2, 5: 2}

    second = reconcile(db, request("a@x.io", "3", event="bridge2"))
    assert second.merge == Merge(1, (2,), (3, 4, 5))
    assert links(db) == {1: None, 2: 1, 3: 1, 4: 1, 5: 1}
    # Secondaries ordered by (created_at, id): 2 (Jan 2), 4 (Jan 3), 3 (Jan 4), 5 (Jan 5).
    assert second.contact == ContactView(
        1, ("a@x.io", "b@x.io", "c@x.io", "b3@x.io", "c5@x.io"), ("1", "2", "3"), (2, 4, 3, 5)
    )
    assert contact_view(db, 5) == contact_view(db, 1) == second.contact
    assert len(merge_log(db)) == 2


def test_bridge_inside_one_cluster_is_not_a_merge(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("a@x.io", "111", event="e1"))
    reconcile(db, request("b@x.io", "111", event="e2"))
    reconcile(db, request("b@x.io", "222", event="e3"))
    answer = reconcile(db, request("a@x.io", "222", event="e4"))
    assert (answer.outcome, answer.merge) == (Outcome.MATCHED, None)
    assert merge_log(db) == []


def test_bridge_with_a_new_value_inserts_a_row_and_merges(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("a@x.io", "111", event="e1", when=at("2023-01-01")))
    reconcile(db, request(None, "222", event="e2", when=at("2023-01-02")))
    reconcile(db, request("c@x.io", None, event="e3", when=at("2023-01-03")))
    # "a@x.io" and "222" bridge clusters 1 and 2; the request brings no new value, so no row.
    assert reconcile(db, request("a@x.io", "222", event="e4")).merge == Merge(1, (2,), ())
    # "c@x.io" with a phone nobody has: one new secondary under cluster 3, no merge.
    answer = reconcile(db, request("c@x.io", "333", event="e5"))
    assert (answer.outcome, answer.contact_id, answer.merge) == (Outcome.CREATED_SECONDARY, 4, None)


# --- rule 8: time -----------------------------------------------------------------------------------


def test_late_older_event_takes_over_as_primary(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("a@x.io", "111", event="e1", when=at("2023-04-10")))
    reconcile(db, request("b@x.io", "111", event="e2", when=at("2023-04-12")))
    before = {r.id: r for r in contacts(db)}

    answer = reconcile(db, request("c@x.io", "111", event="late", when=at("2023-04-01")))

    view = ContactView(3, ("c@x.io", "a@x.io", "b@x.io"), ("111",), (1, 2))
    assert answer == Resolution(Outcome.MERGED, 3, view, Merge(3, (1,), (2,)))
    after = {r.id: r for r in contacts(db)}
    assert {i: (r.linked_id, r.link_precedence) for i, r in after.items()} == {
        1: (3, "secondary"),
        2: (3, "secondary"),
        3: (None, "primary"),
    }
    assert after[3].created_at == at("2023-04-01")
    assert all(after[i].updated_at > before[i].updated_at for i in (1, 2))
    assert [(row["event_type"], row["message_key"]) for row in outbox(db)][-2:] == [
        (RESOLVED_TYPE, "3"),
        (MERGED_TYPE, "3"),
    ]
    assert outbox(db)[-2]["payload"]["data"]["outcome"] == "merged"
    assert [
        (m["source_event_id"], m["surviving_primary_id"], m["merged_primary_ids"]) for m in merge_log(db)
    ] == [("late", 3, [1])]


def test_late_older_event_with_nothing_new_keeps_its_row_as_primary(db: psycopg.Connection[Any]) -> None:
    """Rule 8's exception to rule 6: the identity's primary is its oldest event's row."""
    reconcile(db, request("a@x.io", "111", event="e1", when=at("2023-04-10")))
    answer = reconcile(db, request("a@x.io", "111", event="late", when=at("2023-01-01")))
    assert (answer.outcome, answer.contact_id, answer.merge) == (Outcome.MERGED, 2, Merge(2, (1,), ()))
    assert [(r.id, r.linked_id, r.source_event_id) for r in contacts(db)] == [(1, 2, "e1"), (2, None, "late")]


def test_older_event_inserts_only_when_older_than_every_row_it_matches(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("a@x.io", "111", event="e1", when=at("2023-01-01")))
    reconcile(db, request("b@x.io", "111", event="e2", when=at("2023-04-10")))
    rows = contacts(db)
    answer = reconcile(db, request("a@x.io", "111", event="mid", when=at("2023-02-01")))
    assert (answer.outcome, answer.contact_id) == (Outcome.MATCHED, None)
    assert contacts(db) == rows


def test_event_time_in_the_future_is_clamped(db: psycopg.Connection[Any]) -> None:
    future = datetime.now(UTC) + timedelta(days=3650)
    reconcile(db, request("a@x.io", "111", event="e1", when=future))
    (row,) = contacts(db)
    assert row.created_at == row.updated_at < future
    # A later event with a real past time is older, so it takes over: the clamp kept order sane.
    answer = reconcile(db, request("b@x.io", "111", event="e2", when=at("2023-01-01")))
    assert answer.merge == Merge(2, (1,), ())


# --- soft deletes -----------------------------------------------------------------------------------


def test_soft_deleted_rows_never_match(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("a@x.io", "111", event="e1"))
    execute(db, "UPDATE contact SET deleted_at = now() WHERE id = 1")
    answer = reconcile(db, request("a@x.io", "111", event="e2"))
    assert answer == Resolution(Outcome.CREATED_PRIMARY, 2, ContactView(2, ("a@x.io",), ("111",), ()), None)
    assert contact_view(db, 1) is None
    assert contact_view(db, 2) == answer.contact


def test_soft_deleted_secondary_is_left_out(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("a@x.io", "111", event="e1"))
    reconcile(db, request("b@x.io", "111", event="e2"))
    execute(db, "UPDATE contact SET deleted_at = now() WHERE id = 2")
    assert contact_view(db, 1) == ContactView(1, ("a@x.io",), ("111",), ())
    # contact_view leaves the connection idle, so reconcile can use it next.
    answer = reconcile(db, request("b@x.io", "111", event="e3"))
    assert answer == Resolution(
        Outcome.CREATED_SECONDARY, 3, ContactView(1, ("a@x.io", "b@x.io"), ("111",), (3,)), None
    )
    assert reconcile(db, request("b@x.io", None, event="e4")).contact.primary_id == 1


def test_cluster_whose_primary_was_soft_deleted_is_repaired_by_the_next_touch(
    db: psycopg.Connection[Any],
) -> None:
    # Deleting only a primary leaves its secondaries pointing at a dead row (check flags it); the
    # next input touching the cluster promotes the oldest live row instead of failing.
    reconcile(db, request("a@x.io", "111", event="e1", when=at("2023-01-01")))
    reconcile(db, request("b@x.io", "111", event="e2", when=at("2023-01-02")))
    reconcile(db, request("c@x.io", "111", event="e3", when=at("2023-01-03")))
    execute(db, "UPDATE contact SET deleted_at = now() WHERE id = 1")
    answer = reconcile(db, request("b@x.io", "222", event="e4"))
    assert answer.contact == ContactView(2, ("b@x.io", "c@x.io"), ("111", "222"), (3, 4))
    assert links(db) == {1: None, 2: None, 3: 2, 4: 2}


def test_contact_view_of_unknown_id_is_none(db: psycopg.Connection[Any]) -> None:
    assert contact_view(db, 42) is None
    db.rollback()


# --- idempotency ------------------------------------------------------------------------------------


def test_same_key_same_payload_is_a_duplicate_and_writes_nothing(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("a@x.io", "111", event="e1", when=at("2023-01-05")))
    first = reconcile(db, request("b@x.io", "111", event="e2", when=at("2023-01-01"), order_id="o-2"))
    assert first.outcome is Outcome.MERGED
    written = counts(db)
    rows = contacts(db)

    again = reconcile(db, request(" B@X.io ", "(111)", event="e2", when=at("2023-01-01"), order_id="o-2"))

    assert again.duplicate
    assert not first.duplicate
    assert (again.outcome, again.contact_id, again.contact, again.merge) == (
        first.outcome,
        first.contact_id,
        first.contact,
        first.merge,
    )
    assert counts(db) == written
    assert contacts(db) == rows


def test_duplicate_kept_answer_is_the_first_even_after_later_changes(db: psycopg.Connection[Any]) -> None:
    keyed = replace(request("a@x.io", "111", event="e1"), keeps_answer=True)  # an API call's
    first = reconcile(db, keyed)
    reconcile(db, request("b@x.io", "111", event="e2"))
    again = reconcile(db, keyed)
    assert again.duplicate
    assert again.contact == first.contact


def test_duplicate_event_answers_the_identity_as_it_is_now(db: psycopg.Connection[Any]) -> None:
    """A worker event's record keeps ids only: its size does not grow with the identity's."""
    reconcile(db, request("a@x.io", "111", event="e1"))
    reconcile(db, request("b@x.io", "111", event="e2"))
    again = reconcile(db, request("a@x.io", "111", event="e1"))
    assert again.duplicate
    assert again.contact == ContactView(1, ("a@x.io", "b@x.io"), ("111",), (2,))
    row = db.execute("SELECT result FROM processed_event WHERE event_id = 'e1'").fetchone()
    assert row is not None
    (stored,) = row
    db.rollback()
    assert stored == {"outcome": "created_primary", "contactId": 1, "primaryId": 1, "merge": None}


@pytest.mark.parametrize(
    ("email", "phone", "order_id"),
    [("other@x.io", "111", None), ("a@x.io", "222", None), ("a@x.io", None, None), ("a@x.io", "111", "o-9")],
)
def test_same_key_different_payload_is_rejected_and_writes_nothing(
    db: psycopg.Connection[Any], email: str, phone: str | None, order_id: str | None
) -> None:
    reconcile(db, request("a@x.io", "111", event="e1"))
    written, rows = counts(db), contacts(db)

    with pytest.raises(IdempotencyKeyReused) as info:
        reconcile(db, request(email, phone, event="e1", order_id=order_id))
    assert info.value.conflict == KeyConflict(SOURCE, "e1")
    assert "a@x.io" not in str(info.value)
    assert "111" not in str(info.value)
    assert reconcile_batch(db, [request(email, phone, event="e1", order_id=order_id)]) == [
        KeyConflict(SOURCE, "e1")
    ]
    assert counts(db) == written
    assert contacts(db) == rows


def test_idempotency_key_includes_the_source(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request("a@x.io", "111", event="e1"))
    other = reconcile(db, request("b@x.io", "111", event="e1", source="urn:test:other"))
    assert (other.outcome, other.duplicate) == (Outcome.CREATED_SECONDARY, False)


def test_duplicates_and_conflicts_inside_one_batch(db: psycopg.Connection[Any]) -> None:
    results = reconcile_batch(
        db,
        [
            request("a@x.io", "111", event="e1"),
            request("a@x.io", "111", event="e1"),
            request("b@x.io", "111", event="e1"),
            request("b@x.io", "111", event="e2"),
        ],
    )
    first, duplicate, conflict, second = results
    assert isinstance(first, Resolution)
    assert isinstance(duplicate, Resolution)
    assert isinstance(second, Resolution)
    assert duplicate.duplicate
    assert duplicate.contact == first.contact
    assert conflict == KeyConflict(SOURCE, "e1")
    assert second.outcome is Outcome.CREATED_SECONDARY
    assert counts(db) == {"contact": 2, "processed_event": 2, "merge_log": 0, "outbox": 2}


# --- outbox policy and the connection contract ------------------------------------------------------


def test_api_style_requests_publish_only_changes(db: psycopg.Connection[Any]) -> None:
    created = reconcile(db, request("a@x.io", "111", event="api-1", publish_unchanged=False))
    matched = reconcile(db, request("a@x.io", None, event="api-2", publish_unchanged=False))
    secondary = reconcile(db, request("b@x.io", "111", event="api-3", publish_unchanged=False))
    assert [created.outcome, matched.outcome, secondary.outcome] == [
        Outcome.CREATED_PRIMARY,
        Outcome.MATCHED,
        Outcome.CREATED_SECONDARY,
    ]
    assert [row["payload"]["data"]["sourceEventId"] for row in outbox(db)] == ["api-1", "api-3"]
    assert counts(db)["processed_event"] == 3, "the answer is still recorded for retries"
    # Events publish even when nothing changed.
    reconcile(db, request("a@x.io", None, event="evt-1"))
    assert outbox(db)[-1]["payload"]["data"]["outcome"] == "matched"


def test_inputs_nobody_can_retry_leave_no_idempotency_record(db: psycopg.Connection[Any]) -> None:
    """An API call without an Idempotency-Key: applied and provenance recorded, nothing to replay."""
    first = reconcile(db, request("a@x.io", "111", event="call-1", idempotent=False))
    again = reconcile(db, request("a@x.io", "222", event="call-1", idempotent=False))
    assert (first.outcome, again.outcome) == (Outcome.CREATED_PRIMARY, Outcome.CREATED_SECONDARY)
    assert not again.duplicate
    assert counts(db) == {"contact": 2, "processed_event": 0, "merge_log": 0, "outbox": 2}
    assert [row.source_event_id for row in contacts(db)] == ["call-1", "call-1"]


def test_batch_refuses_a_connection_inside_a_transaction(db: psycopg.Connection[Any]) -> None:
    db.execute("SELECT 1")
    with pytest.raises(RuntimeError, match="outside any transaction"):
        reconcile_batch(db, [request("a@x.io", None, event="e1")])
    with pytest.raises(RuntimeError):
        reconcile(db, request("a@x.io", None, event="e1"))
    db.rollback()
    assert counts(db)["contact"] == 0
    assert reconcile_batch(db, []) == []
    assert reconcile(db, request("a@x.io", None, event="e1")).outcome is Outcome.CREATED_PRIMARY
