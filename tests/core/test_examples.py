"""The specification's two worked examples (Bitespeed), checked row by row and event by event."""

from __future__ import annotations

from typing import Any

import psycopg

from consumer.contract import MERGED_TYPE, RESOLVED_TYPE, Outcome
from consumer.core import ContactView, Merge, Resolution, reconcile
from consumer.core.events import EVENT_SOURCE, output_event_id
from tests.core.helpers import at, contacts, counts, merge_log, outbox, request
from tests.support import SOURCE
from tests.support.database import reset_database

LORRAINE = "lorraine@hillvalley.edu"
MCFLY = "mcfly@hillvalley.edu"
GEORGE = "george@hillvalley.edu"
BIFF = "biffsucks@hillvalley.edu"


def payload(view: ContactView) -> dict[str, Any]:
    return {
        "primaryContatctId": view.primary_id,
        "primaryContactId": view.primary_id,
        "emails": list(view.emails),
        "phoneNumbers": list(view.phone_numbers),
        "secondaryContactIds": list(view.secondary_ids),
    }


def resolved(event: str, outcome: Outcome, contact_id: int | None, view: ContactView) -> dict[str, Any]:
    """The outbox row `identity.resolved` for a source event, minus the processing time."""
    return {
        "event_type": RESOLVED_TYPE,
        "message_key": str(view.primary_id),
        "payload": {
            "specversion": "1.0",
            "id": output_event_id(SOURCE, event, RESOLVED_TYPE),
            "source": EVENT_SOURCE,
            "type": RESOLVED_TYPE,
            "subject": str(view.primary_id),
            "datacontenttype": "application/json",
            "data": {
                "sourceEventId": event,
                "sourceEventSource": SOURCE,
                "outcome": outcome.value,
                "contactId": contact_id,
                "contact": payload(view),
            },
        },
    }


def merged(event: str, merge: Merge, view: ContactView) -> dict[str, Any]:
    return {
        "event_type": MERGED_TYPE,
        "message_key": str(view.primary_id),
        "payload": {
            "specversion": "1.0",
            "id": output_event_id(SOURCE, event, MERGED_TYPE),
            "source": EVENT_SOURCE,
            "type": MERGED_TYPE,
            "subject": str(view.primary_id),
            "datacontenttype": "application/json",
            "data": {
                "sourceEventId": event,
                "survivingPrimaryId": merge.surviving_primary_id,
                "mergedPrimaryIds": list(merge.merged_primary_ids),
                "relinkedContactIds": list(merge.relinked_contact_ids),
                "contact": payload(view),
            },
        },
    }


def outbox_without_time(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    rows = outbox(conn)
    for row in rows:
        assert row["payload"].pop("time")
    return rows


def test_lorraine_and_mcfly(db: psycopg.Connection[Any]) -> None:
    first = reconcile(db, request(LORRAINE, "123456", event="e1", when=at("2023-04-01")))
    one = ContactView(1, (LORRAINE,), ("123456",), ())
    assert first == Resolution(Outcome.CREATED_PRIMARY, 1, one, None)
    (lorraine,) = contacts(db)

    second = reconcile(db, request(MCFLY, "123456", event="e2", when=at("2023-04-20")))
    both = ContactView(1, (LORRAINE, MCFLY), ("123456",), (2,))
    assert second == Resolution(Outcome.CREATED_SECONDARY, 2, both, None)

    rows = contacts(db)
    assert rows[0] == lorraine, "the primary did not change, so it was not touched"
    assert [(r.id, r.email, r.phone_number, r.linked_id, r.link_precedence, r.created_at) for r in rows] == [
        (1, LORRAINE, "123456", None, "primary", at("2023-04-01")),
        (2, MCFLY, "123456", 1, "secondary", at("2023-04-20")),
    ]
    assert [(r.source, r.source_event_id) for r in rows] == [(SOURCE, "e1"), (SOURCE, "e2")]
    assert rows[1].updated_at > rows[1].created_at, "worker rows are created at the event's time"

    same = [(MCFLY, "123456"), (None, "123456"), (LORRAINE, None), (MCFLY, None)]
    for n, (email, phone) in enumerate(same, start=3):
        answer = reconcile(db, request(email, phone, event=f"e{n}"))
        assert answer == Resolution(Outcome.MATCHED, None, both, None)
    assert contacts(db) == rows, "requests with nothing new insert and change nothing"

    assert outbox_without_time(db) == [
        resolved("e1", Outcome.CREATED_PRIMARY, 1, one),
        resolved("e2", Outcome.CREATED_SECONDARY, 2, both),
        *(resolved(f"e{n}", Outcome.MATCHED, None, both) for n in range(3, 7)),
    ]
    assert merge_log(db) == []
    assert counts(db) == {"contact": 2, "processed_event": 6, "merge_log": 0, "outbox": 6}


def test_george_and_biff(db: psycopg.Connection[Any]) -> None:
    reconcile(db, request(GEORGE, "919191", event="e1", when=at("2023-04-11")))
    biff = reconcile(db, request(BIFF, "717171", event="e2", when=at("2023-04-21")))
    assert biff.outcome is Outcome.CREATED_PRIMARY
    assert biff.contact_id == 2
    before = contacts(db)

    answer = reconcile(db, request(GEORGE, "717171", event="e3"))

    view = ContactView(1, (GEORGE, BIFF), ("919191", "717171"), (2,))
    merge = Merge(1, (2,), ())
    assert answer == Resolution(Outcome.MERGED, None, view, merge)
    after = contacts(db)
    assert len(after) == 2, "both values were known: the merge inserts no row"
    assert after[0] == before[0], "the surviving primary is unchanged"
    assert (after[1].linked_id, after[1].link_precedence) == (1, "secondary")
    assert after[1].updated_at > before[1].updated_at
    assert (after[1].created_at, after[1].email, after[1].phone_number) == (at("2023-04-21"), BIFF, "717171")

    george = ContactView(1, (GEORGE,), ("919191",), ())
    alone = ContactView(2, (BIFF,), ("717171",), ())
    assert outbox_without_time(db) == [
        resolved("e1", Outcome.CREATED_PRIMARY, 1, george),
        resolved("e2", Outcome.CREATED_PRIMARY, 2, alone),
        resolved("e3", Outcome.MERGED, None, view),
        merged("e3", merge, view),
    ]
    assert merge_log(db) == [
        {
            "source": SOURCE,
            "source_event_id": "e3",
            "email": GEORGE,
            "phone_number": "717171",
            "surviving_primary_id": 1,
            "merged_primary_ids": [2],
            "relinked_contact_ids": [],
        }
    ]


def test_output_event_ids_are_deterministic(db: psycopg.Connection[Any]) -> None:
    def story() -> list[str]:
        reset_database(db)
        reconcile(db, request(GEORGE, "919191", event="e1", when=at("2023-04-11")))
        reconcile(db, request(BIFF, "717171", event="e2", when=at("2023-04-21")))
        reconcile(db, request(GEORGE, "717171", event="e3"))
        return [row["payload"]["id"] for row in outbox(db)]

    ids = story()
    assert story() == ids, "the same source events yield the same output ids"
    assert len(set(ids)) == len(ids) == 4
    assert ids[3] == output_event_id(SOURCE, "e3", MERGED_TYPE) != ids[2]
    assert output_event_id("urn:other", "e3", MERGED_TYPE) != ids[3]
