"""Rule 17: erasure deletes the rows holding a value, removes it from every table, and splits the rest."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import psycopg

from consumer import queries
from consumer.contract import ERASED_TYPE, SPLIT_TYPE, ErasedData, SplitData
from consumer.core import ContactView, Guardrails, Input, check_invariants, reconcile, reconcile_batch
from consumer.core.blocklist import lock_key, value_hash
from consumer.core.erasure import Erasure, erase
from consumer.core.events import EVENT_SOURCE, output_event_id
from consumer.core.reconcile import with_identities
from consumer.normalize import Identifiers
from tests.core.helpers import (
    NORMALIZER,
    at,
    contacts,
    counts,
    execute,
    merge_log,
    outbox,
    request,
    run_concurrently,
    start_until_it_waits,
    table,
)
from tests.support.services import pg_dump

LORRAINE, MCFLY, DOC, BIFF = (
    "lorraine@hillvalley.edu",
    "mcfly@hillvalley.edu",
    "doc@hillvalley.edu",
    "biff@hillvalley.edu",
)
GUARD = Guardrails()


def api_call(email: str | None, phone: str | None, key: str) -> Input:
    """A POST /identify with an Idempotency-Key: its stored answer keeps the identity's values."""
    return Input(
        NORMALIZER.identifiers(email, phone),
        source="identity-api",
        event_id=key,
        publish_unchanged=False,
        keeps_answer=True,
    )


def hillvalley(db: psycopg.Connection[Any]) -> None:
    """#1 Lorraine and #2 McFly share a phone; #3 Doc joins them through a merge bridging McFly's email
    with Doc's phone (no row holds that pair); #4 Biff comes through the API on Doc's phone."""
    reconcile(db, request(LORRAINE, "123456", event="e1", when=at("2023-04-01")))
    reconcile(db, request(MCFLY, "123456", event="e2", when=at("2023-04-20")))
    reconcile(db, request(DOC, "717171", event="e3", when=at("2023-04-21")))
    reconcile(db, request(MCFLY, "717171", event="e4", when=at("2023-04-22")))
    reconcile(db, api_call(BIFF, "717171", "k1"))


def view(primary: int, emails: list[str], phones: list[str], secondaries: list[int]) -> dict[str, object]:
    return ContactView(primary, tuple(emails), tuple(phones), tuple(secondaries)).document()


def dumped_forms(value: str) -> list[str]:
    return [value, value.lower(), json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]]


def test_erasing_a_bridging_email_removes_it_everywhere_and_splits_the_rest(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    hillvalley(db)
    # Also a row soft-deleted by hand long ago, and an operator's note that names the value.
    execute(
        db,
        "INSERT INTO contact (id, email, phone_number, link_precedence, created_at, updated_at, deleted_at,"
        " source, source_event_id) VALUES (99, %s, NULL, 'primary', now(), now(), now(), 'legacy', 'l1')",
        (MCFLY,),
    )
    with_identities(
        db,
        [Identifiers(None, "5550123")],
        GUARD,
        lambda tx: tx.guard.block("phone", "5550123", "operator", "test", f"typed by {MCFLY}"),
    )
    assert MCFLY in pg_dump(database_url)

    erasure = erase(db, "email", MCFLY, "operator:test", GUARD)

    assert (erasure.erased_contact_ids, erasure.former_primary_ids) == ((2,), (1,))
    lorraine = view(1, [LORRAINE], ["123456"], [])
    docs = view(3, [DOC, BIFF], ["717171"], [4])
    assert [v.document() for v in erasure.identities] == [lorraine, docs]
    dump = pg_dump(database_url)
    for form in dumped_forms(MCFLY):
        assert form not in dump

    # The erased row is a tombstone without values; the rest form the link graph's components.
    rows = {r.id: r for r in contacts(db)}
    assert (rows[2].email, rows[2].phone_number, rows[2].deleted_at is not None) == (None, None, True)
    assert (rows[99].email, rows[99].phone_number) == (None, None)
    assert [(r.id, r.linked_id) for r in rows.values() if r.deleted_at is None] == [
        (1, None),
        (3, None),
        (4, 3),
    ]
    assert check_invariants(db) == []
    assert [(m["email"], m["phone_number"]) for m in merge_log(db)] == [(None, "717171")]
    (logged,) = table(db, "SELECT * FROM erasure_request")
    assert logged["kind"] == "email"
    assert bytes(logged["value_hash"]) == value_hash("email", MCFLY, GUARD.hash_key)
    assert (logged["erased_contact_ids"], logged["former_primary_ids"]) == ([2], [1])
    assert logged["requested_by"] == "operator:test"

    # identity.erased then identity.split, keyed by the former primary, exactly.
    *_, erased, split = outbox(db)
    source = f"{EVENT_SOURCE}:erasure"
    assert erased["event_type"] == ERASED_TYPE
    assert erased["message_key"] == "1"
    assert erased["payload"]["id"] == output_event_id(source, f"{erasure.request_id}:1", ERASED_TYPE)
    assert erased["payload"]["data"] == {
        "erasureRequestId": erasure.request_id,
        "formerPrimaryId": 1,
        "erasedContactIds": [2],
    }
    ErasedData.model_validate(erased["payload"]["data"])
    assert split["event_type"] == SPLIT_TYPE
    assert split["message_key"] == "1"
    assert split["payload"]["data"] == {
        "cause": {"type": "erasure", "id": erasure.request_id},
        "formerPrimaryId": 1,
        "identities": [lorraine, docs],
    }
    SplitData.model_validate(split["payload"]["data"])

    # The API call's stored answer survives without the value: a retry answers it again.
    replay = reconcile(db, api_call(BIFF, "717171", "k1"))
    assert replay.duplicate
    assert MCFLY not in replay.contact.emails


def test_an_erasure_rewrites_only_the_events_of_an_outbox_row_that_carry_the_value(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # One transaction, so one outbox row (sql/008) holding events with and without the value.
    reconcile_batch(db, [request(LORRAINE, "123456", event="e1"), request(MCFLY, "717171", event="e2")])
    (before,) = table(db, "SELECT payloads FROM outbox")
    lorraines, mcflys = before["payloads"].split("\n")
    db.commit()

    erase(db, "email", MCFLY, "operator:test", GUARD)

    after, _erasure_events = table(db, "SELECT payloads FROM outbox ORDER BY id")
    kept, scrubbed = after["payloads"].split("\n")
    assert kept == lorraines, "an event without the value is left byte for byte"
    assert json.loads(scrubbed)["data"]["contact"]["emails"] == []
    assert json.loads(scrubbed)["id"] == json.loads(mcflys)["id"]
    for form in dumped_forms(MCFLY):
        assert form not in pg_dump(database_url)


def test_a_redelivered_event_stays_a_duplicate_and_brings_nothing_back(db: psycopg.Connection[Any]) -> None:
    hillvalley(db)
    erase(db, "email", MCFLY, "operator:test", GUARD)
    before = counts(db)

    again = reconcile(db, request(MCFLY, "123456", event="e2", when=at("2023-04-20")))

    assert again.duplicate
    assert counts(db) == before
    assert all(r.email != MCFLY for r in contacts(db))


def test_repeating_an_erasure_is_harmless(db: psycopg.Connection[Any]) -> None:
    hillvalley(db)
    erase(db, "email", MCFLY, "operator:test", GUARD)
    rows, events = contacts(db), outbox(db)

    again = erase(db, "email", MCFLY, "operator:test", GUARD)

    assert (again.erased_contact_ids, again.former_primary_ids, again.identities) == ((), (), ())
    assert again.request_id is not None
    assert (contacts(db), outbox(db)) == (rows, events)
    assert check_invariants(db) == []


def test_erasing_a_value_nobody_holds_succeeds_with_empty_lists(db: psycopg.Connection[Any]) -> None:
    erasure = erase(db, "phone", "5550199", "operator:test", GUARD)

    assert erasure.document() == {
        "erasureRequestId": erasure.request_id,
        "erasedContactIds": [],
        "identities": [],
    }
    assert len(table(db, "SELECT id FROM erasure_request")) == 1


def rows_dumped(database_url: str) -> list[str]:
    """The dump's lines but its random restrict key and the sequences (a rolled back nextval stays)."""
    return [
        line
        for line in pg_dump(database_url).splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict", "SELECT pg_catalog.setval"))
    ]


def test_a_dry_run_answers_what_would_happen_and_changes_nothing(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    hillvalley(db)
    before = rows_dumped(database_url)

    dry = erase(db, "email", MCFLY, "operator:test", GUARD, dry_run=True)

    assert dry.request_id is None
    assert dry.erased_contact_ids == (2,)
    assert [v.primary_id for v in dry.identities] == [1, 3]
    assert rows_dumped(database_url) == before
    assert erase(db, "email", MCFLY, "operator:test", GUARD).identities == dry.identities


def test_erasing_the_primary_relinks_what_remains_to_its_oldest_row(db: psycopg.Connection[Any]) -> None:
    hillvalley(db)

    erasure = erase(db, "email", LORRAINE, "operator:test", GUARD)

    # #2 McFly, the oldest row left, becomes the primary; the merge's bridge keeps Doc and Biff linked.
    everyone = view(2, [MCFLY, DOC, BIFF], ["123456", "717171"], [3, 4])
    assert [v.document() for v in erasure.identities] == [everyone]
    live = [(r.id, r.linked_id) for r in contacts(db) if r.deleted_at is None]
    assert live == [(2, None), (3, 2), (4, 2)]
    assert check_invariants(db) == []
    *_, erased, split = outbox(db)
    assert (erased["message_key"], split["message_key"]) == ("1", "1")
    assert split["payload"]["data"]["identities"] == [everyone]


def test_an_erased_blocked_value_stays_blocked_by_its_hash(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    hillvalley(db)
    blocked = Identifiers(None, "123456")
    with_identities(db, [blocked], GUARD, lambda tx: tx.guard.block("phone", "123456", "operator", "test"))

    erase(db, "phone", "123456", "operator:test", GUARD)

    assert "123456" not in pg_dump(database_url)
    (block,) = table(db, "SELECT value, value_hash, removed_at FROM blocked_value")
    assert block["value"] is None
    assert block["removed_at"] is None
    assert bytes(block["value_hash"]) == value_hash("phone", "123456", GUARD.hash_key)
    before = counts(db)
    refused = reconcile(db, request("new@hillvalley.edu", "123456", event="e9")).contact
    assert refused.phone_numbers == ()
    assert counts(db)["contact"] == before["contact"] + 1


def test_an_erasure_waits_for_a_writer_of_the_value_and_erases_its_row_too(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    hillvalley(db)
    erased: list[Erasure] = []
    with psycopg.connect(database_url) as writer, psycopg.connect(database_url, autocommit=True) as eraser:
        # A transaction writing McFly's email, holding its lock as every writer of it does.
        writer.execute(queries.LOCK_KEYS, [f"[{lock_key('email', MCFLY)}]"])
        writer.execute(
            "INSERT INTO contact (id, email, phone_number, linked_id, link_precedence, created_at,"
            " updated_at, source, source_event_id)"
            " VALUES (9, %s, '5550142', 1, 'secondary', now(), now(), 'test', 'w')",
            [MCFLY],
        )
        thread = start_until_it_waits(
            db,
            eraser,
            lambda: erased.append(erase(eraser, "email", MCFLY, "operator:test", GUARD)),
            "the erasure should wait for the value's lock",
        )
        writer.commit()
        thread.join(30)

    (erasure,) = erased
    assert erasure.erased_contact_ids == (2, 9)
    assert MCFLY not in pg_dump(database_url)
    assert check_invariants(db) == []


def test_erasures_racing_with_batches_and_api_calls_keep_every_invariant(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    emails = [MCFLY, LORRAINE, DOC, BIFF, "george@hillvalley.edu"]
    phones = ["123456", "717171", "919191"]

    def work(n: int, conn: psycopg.Connection[Any], start: threading.Barrier) -> None:
        rng = random.Random(n)
        for round_ in range(25):
            if n == 0:
                erase(conn, "email", MCFLY, "operator:test", GUARD)
                erase(conn, "phone", rng.choice(phones), "operator:test", GUARD)
                continue
            inputs = [(rng.choice(emails), rng.choice(phones)) for _ in range(4)]
            if n % 2:  # a worker batch
                batch = [request(e, p, event=f"w{n}-{round_}-{i}") for i, (e, p) in enumerate(inputs)]
                reconcile_batch(conn, batch, GUARD)
            else:  # API calls with an Idempotency-Key, whose answers keep the identity's values
                for i, (e, p) in enumerate(inputs):
                    reconcile(conn, api_call(e, p, f"a{n}-{round_}-{i}"), GUARD)

    run_concurrently(4, work, database_url)

    assert check_invariants(db) == []
    db.commit()  # check_invariants' reads opened a transaction: the erasure must not join it
    erase(db, "email", MCFLY, "operator:test", GUARD)
    assert MCFLY not in pg_dump(database_url)
    assert check_invariants(db) == []


def test_an_erasure_waits_for_a_publishing_round_that_read_the_outbox_before_it(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    hillvalley(db)
    erased: list[Erasure] = []
    with (
        psycopg.connect(database_url, autocommit=True) as relay,
        psycopg.connect(database_url, autocommit=True) as eraser,
    ):
        relay.execute(queries.OUTBOX_ROUND_LOCK)  # a round has read rows and is publishing them
        thread = start_until_it_waits(
            db,
            eraser,
            lambda: erased.append(erase(eraser, "email", MCFLY, "operator:test", GUARD)),
            "the erasure should wait for the publishing round",
        )
        relay.execute(queries.OUTBOX_ROUND_UNLOCK)
        thread.join(30)

    assert [e.erased_contact_ids for e in erased] == [(2,)]
