"""The whole pipeline as real processes: producer tools → checkout topic → worker → PostgreSQL → relay →
output topics, checked against the exact events the contract (DESIGN.md) promises for every rule, then
with the relay killed mid-stream."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg

from consumer.contract import MERGED_TYPE, RESOLVED_TYPE
from consumer.core import check_invariants
from consumer.core.events import EVENT_SOURCE, output_event_id
from producer_tools import CheckoutProducer, synthetic_records
from tests.support.database import outbox_rows, processed, published, unpublished
from tests.support.kafka import Output, OutputReader
from tests.support.polling import wait_until
from tests.support.stack import Stack

SOURCE = "urn:e2e:checkout"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
LORRAINE, MCFLY, GEORGE = "lorraine@hillvalley.edu", "mcfly@hillvalley.edu", "george@hillvalley.edu"
BIFF, DOC = "biffsucks@hillvalley.edu", "doc@hillvalley.edu"


@dataclass(frozen=True)
class Checkout:
    event_id: str
    email: str | None
    phone: str | int | None
    minute: int

    @property
    def time(self) -> datetime:
        return T0 + timedelta(minutes=self.minute)


STORY = [
    Checkout("e1", LORRAINE, "123456", 1),  # rule 4: a new primary
    Checkout("e2", " McFly@HillValley.edu ", 123456, 2),  # rules 1, 2, 5: normalized, new email: secondary
    Checkout("e3", GEORGE, "919-191", 10),  # a new primary, phone normalized
    Checkout("e4", BIFF, "717171", 11),  # a new primary
    Checkout("e5", GEORGE, "717171", 12),  # rule 7: two clusters merge, no row inserted
    Checkout("e6", MCFLY, None, 13),  # rule 6: nothing new
    Checkout("e7", None, "123456", 14),  # rule 6, phone only
    Checkout("e8", DOC, "919191", 5),  # rule 8: a late, older event becomes its cluster's primary
    Checkout("e9", LORRAINE, "717171", 20),  # rule 7 again: the oldest primary wins, relinking all
]
# Rule 1: no usable identifier; dead-lettered, and the events after it are still applied.
NO_IDENTIFIERS = {
    "specversion": "1.0",
    "id": "e-empty",
    "source": SOURCE,
    "type": "checkout.completed",
    "time": "2024-01-01T00:30:00Z",
    "data": {"email": "  ", "phoneNumber": ""},
}


def produce(bootstrap: str, topic: str, checkouts: list[Checkout]) -> None:
    with CheckoutProducer(bootstrap, topic, source=SOURCE) as producer:
        for c in checkouts:
            producer.send(c.email, c.phone, event_id=c.event_id, time=c.time)
            if c.event_id == "e4":
                producer.send_raw(
                    orjson.dumps(NO_IDENTIFIERS), headers={"content-type": "application/cloudevents+json"}
                )


def contact(primary: int, emails: list[str], phones: list[str], secondaries: list[int]) -> dict[str, Any]:
    return {
        "primaryContatctId": primary,
        "primaryContactId": primary,
        "emails": emails,
        "phoneNumbers": phones,
        "secondaryContactIds": secondaries,
    }


def event(event_type: str, event_id: str, view: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """An output CloudEvent without its `time` (the processing time, checked separately)."""
    key = str(view["primaryContactId"])
    return {
        "specversion": "1.0",
        "id": output_event_id(SOURCE, event_id, event_type),
        "source": EVENT_SOURCE,
        "type": event_type,
        "subject": key,
        "datacontenttype": "application/json",
        "data": {"sourceEventId": event_id, **data, "contact": view},
    }


def resolved(event_id: str, outcome: str, contact_id: int | None, view: dict[str, Any]) -> dict[str, Any]:
    data = {"sourceEventSource": SOURCE, "outcome": outcome, "contactId": contact_id}
    return event(RESOLVED_TYPE, event_id, view, data)


def merged(
    event_id: str, surviving: int, demoted: list[int], relinked: list[int], view: dict[str, Any]
) -> dict[str, Any]:
    data = {"survivingPrimaryId": surviving, "mergedPrimaryIds": demoted, "relinkedContactIds": relinked}
    return event(MERGED_TYPE, event_id, view, data)


def expected_outputs(ids: dict[str, int]) -> list[dict[str, Any]]:
    """What the story must publish, in order; `ids` maps an event to the contact id of the row it created."""
    a, b, c, d, e = (ids[event_id] for event_id in ("e1", "e2", "e3", "e4", "e8"))
    lorraine = contact(a, [LORRAINE], ["123456"], [])
    mcflys = contact(a, [LORRAINE, MCFLY], ["123456"], [b])
    georges = contact(c, [GEORGE, BIFF], ["919191", "717171"], [d])
    docs = contact(e, [DOC, GEORGE, BIFF], ["919191", "717171"], [c, d])
    everyone = contact(a, [LORRAINE, MCFLY, DOC, GEORGE, BIFF], ["123456", "919191", "717171"], [b, e, c, d])
    return [
        resolved("e1", "created_primary", a, lorraine),
        resolved("e2", "created_secondary", b, mcflys),
        resolved("e3", "created_primary", c, contact(c, [GEORGE], ["919191"], [])),
        resolved("e4", "created_primary", d, contact(d, [BIFF], ["717171"], [])),
        resolved("e5", "merged", None, georges),
        merged("e5", c, [d], [], georges),
        resolved("e6", "matched", None, mcflys),
        resolved("e7", "matched", None, mcflys),
        resolved("e8", "merged", e, docs),
        merged("e8", e, [c], [d], docs),
        resolved("e9", "merged", None, everyone),
        merged("e9", a, [e], sorted([c, d]), everyone),
    ]


def by_topic_and_key(values: list[tuple[str, dict[str, Any]]]) -> dict[tuple[str, str], list[Any]]:
    streams: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for topic, value in values:
        streams[(topic, value["subject"])].append(value)
    return streams


def run_story(stack: Stack, db: psycopg.Connection[Any], reader: OutputReader) -> list[Output]:
    produce(stack.bootstrap, stack.topics.checkout, STORY)
    stack.start("worker")
    stack.start("relay")
    url = stack.database_url
    wait_until(lambda: processed(url, SOURCE) == len(STORY), 60, "every event applied")
    wait_until(lambda: unpublished(url) == 0, 30, "every outbox row published")
    return list(reader.read_until(lambda m: len(m) >= 12))


def created_by(db: psycopg.Connection[Any]) -> dict[str, int]:
    rows = db.execute("SELECT source_event_id, id FROM contact WHERE source = %s", [SOURCE]).fetchall()
    db.commit()
    return dict(rows)


def test_every_rule_end_to_end_with_the_exact_output_events(
    stack: Stack, db: psycopg.Connection[Any], reader: OutputReader
) -> None:
    messages = run_story(stack, db, reader)
    ids = created_by(db)

    # The database: one row per event that brought something new, all linked straight to the oldest.
    a = ids["e1"]
    rows = db.execute(
        "SELECT source_event_id, email, phone_number, linked_id, link_precedence, created_at"
        " FROM contact ORDER BY id"
    ).fetchall()
    at = {c.event_id: c.time for c in STORY}
    assert rows == [
        ("e1", LORRAINE, "123456", None, "primary", at["e1"]),
        ("e2", MCFLY, "123456", a, "secondary", at["e2"]),
        ("e3", GEORGE, "919191", a, "secondary", at["e3"]),
        ("e4", BIFF, "717171", a, "secondary", at["e4"]),
        ("e8", DOC, "919191", a, "secondary", at["e8"]),
    ]
    merges = db.execute(
        "SELECT source_event_id, surviving_primary_id, merged_primary_ids, relinked_contact_ids"
        " FROM merge_log ORDER BY id"
    ).fetchall()
    assert merges == [
        ("e5", ids["e3"], [ids["e4"]], []),
        ("e8", ids["e8"], [ids["e3"]], [ids["e4"]]),
        ("e9", a, [ids["e8"]], sorted([ids["e3"], ids["e4"]])),
    ]
    assert check_invariants(db) == []

    # The output events: exactly these, each on its topic, keyed by the primary, in order per key.
    topics = stack.topics
    topic_of = {RESOLVED_TYPE: topics.resolved, MERGED_TYPE: topics.merged}
    for m in messages:
        assert m.key == m.value["subject"]
        assert m.headers == {"content-type": b"application/cloudevents+json"}
        assert datetime.fromisoformat(m.value.pop("time")) > T0
    expected = [(topic_of[value["type"]], value) for value in expected_outputs(ids)]
    assert len(messages) == len(expected)
    assert by_topic_and_key([(m.topic, m.value) for m in messages]) == by_topic_and_key(expected)

    # Rule 1: the event without identifiers went to the dead-letter topic, with a reason.
    dlq = OutputReader(stack.bootstrap, [stack.topics.dlq], partitions=1)
    try:
        (dead,) = dlq.read_until(lambda m: len(m) >= 1)
    finally:
        dlq.close()
    assert dead.value["id"] == "e-empty"
    assert dead.headers["error.reason"] == b"no_identifiers"


def test_events_produced_twice_create_no_rows_and_no_output_events(
    stack: Stack, db: psycopg.Connection[Any], reader: OutputReader
) -> None:
    messages = run_story(stack, db, reader)
    counts = "SELECT (SELECT count(*) FROM contact), (SELECT count(*) FROM outbox_event)"
    before = db.execute(counts).fetchone()
    db.commit()
    assert before is not None

    # The same events again, then a new one: one partition, so once it is applied the rest were too.
    marty = Checkout("e10", "marty@hillvalley.edu", None, 30)
    produce(stack.bootstrap, stack.topics.checkout, [*STORY, marty])
    url = stack.database_url
    wait_until(lambda: processed(url, SOURCE) == len(STORY) + 1, 60, "the new event applied")
    wait_until(lambda: unpublished(url) == 0, 30, "its output published")

    assert db.execute(counts).fetchone() == (before[0] + 1, before[1] + 1)
    # Every output comes from an outbox row, so one new row means one new output event: e10's.
    new = reader.read_until(lambda m: any(x.value["data"]["sourceEventId"] == "e10" for x in m))
    assert [(m.value["data"]["sourceEventId"], m.value["data"]["outcome"]) for m in new[len(messages) :]] == [
        ("e10", "created_primary")
    ]


def test_every_event_gets_its_output_when_the_relay_is_killed_during_thousands_of_events(
    stack: Stack, db: psycopg.Connection[Any], reader: OutputReader
) -> None:
    records = list(synthetic_records(customers=600, events=3000, seed=7))
    with CheckoutProducer(stack.bootstrap, stack.topics.checkout, source=SOURCE) as producer:
        for record in records:
            producer.send_record(record)
    stack.start("worker", WORKER_BATCH_SIZE="100")
    for kill in range(1, 4):
        relay = stack.start("relay", RELAY_BATCH_SIZE="100")

        def progressed(kill: int = kill) -> bool:
            return published(db) >= kill * len(records) // 4

        wait_until(progressed, 60, f"publishing progress before kill {kill}")
        relay.kill()
    stack.start("relay")
    url = stack.database_url
    wait_until(lambda: processed(url, SOURCE) == len(records), 60, "every event applied")
    wait_until(lambda: unpublished(url) == 0, 60, "every outbox row published")

    rows = outbox_rows(db)
    messages = reader.read_until(lambda m: len({x.id for x in m}) >= len(rows), timeout=60)
    first: dict[str, Output] = {}
    resolved: dict[str, set[str]] = defaultdict(set)
    for m in messages:
        assert first.setdefault(m.id, m).value == m.value, "a redelivered output differs"
        if m.value["type"] == RESOLVED_TYPE:
            resolved[m.value["data"]["sourceEventId"]].add(m.id)
    assert resolved.keys() == {r.event_id for r in records}
    assert all(len(ids) == 1 for ids in resolved.values()), "one output id per source event"
