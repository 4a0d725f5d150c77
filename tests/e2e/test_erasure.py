"""Rule 17 end to end: identities built by the worker and the API, a bridging email erased over HTTP,
then the database dumped whole, the published events read back, and the old event redelivered."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from consumer.contract import ERASED_TYPE, SPLIT_TYPE
from consumer.core import ContactView, check_invariants
from consumer.core.events import EVENT_SOURCE, output_event_id
from producer_tools import CheckoutProducer
from tests.support.database import processed, unpublished
from tests.support.kafka import OutputReader
from tests.support.polling import wait_until
from tests.support.processes import api_server
from tests.support.services import pg_dump
from tests.support.stack import Stack

SOURCE = "urn:e2e:checkout"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
LORRAINE, DOC, BIFF = "lorraine@hillvalley.edu", "doc@hillvalley.edu", "biff@hillvalley.edu"
MCFLY = "marty.mcfly+ñ@hillvalley.edu"  # non-ASCII: its JSON-escaped form must be gone too
CHECKOUTS = [("e1", LORRAINE, "123456"), ("e2", MCFLY, "123456"), ("e3", DOC, "717171")]


def send(bootstrap: str, topic: str, checkouts: list[tuple[str, str, str]]) -> None:
    with CheckoutProducer(bootstrap, topic, source=SOURCE) as producer:
        for n, (event_id, email, phone) in enumerate(checkouts):
            producer.send(email, phone, event_id=event_id, time=T0 + timedelta(minutes=n))


def forms(value: str) -> list[str]:
    """The value as a dump or a message could spell it: raw, upper-cased input, JSON-escaped."""
    return [value, value.upper(), json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]]


def carries(text: str, value: str) -> bool:
    return any(form in text for form in forms(value))


def view(primary: int, emails: list[str], phones: list[str], secondaries: list[int]) -> dict[str, object]:
    return ContactView(primary, tuple(emails), tuple(phones), tuple(secondaries)).document()


def test_an_erased_email_is_nowhere_and_comes_back_with_no_event(
    stack: Stack, db: psycopg.Connection[Any], reader: OutputReader, tmp_path: Path
) -> None:
    url = stack.database_url
    send(stack.bootstrap, stack.topics.checkout, CHECKOUTS)
    stack.start("worker")
    relay = stack.start("relay")
    wait_until(lambda: processed(url, SOURCE) == 3, 60, "the checkouts applied")
    with api_server(url, tmp_path) as api, httpx.Client(base_url=api.url, timeout=30) as client:
        # A merge through the API: McFly's email with Doc's phone, both known, so no row holds the pair.
        merge = client.post(
            "/identify", json={"email": MCFLY, "phoneNumber": "717171"}, headers={"Idempotency-Key": "k1"}
        )
        assert merge.json()["contact"]["secondaryContactIds"] == [2, 3]
        wait_until(lambda: unpublished(url) == 0, 30, "the first events published")
        before = len(reader.read_until(lambda m: len(m) >= 5))
        # Biff's answer and event hold McFly's email; they wait unpublished while the erasure runs.
        assert relay.stop() == 0
        biff = client.post("/identify", json={"email": BIFF, "phoneNumber": "717171"})
        assert MCFLY in biff.json()["contact"]["emails"]
        assert unpublished(url) == 1

        erasure = client.post("/erasure-requests", json={"email": MCFLY.upper()})

        assert erasure.status_code == 200, erasure.text
        request_id = erasure.json()["erasureRequestId"]
        lorraine, docs = view(1, [LORRAINE], ["123456"], []), view(3, [DOC, BIFF], ["717171"], [4])
        assert erasure.json() == {
            "erasureRequestId": request_id,
            "erasedContactIds": [2],
            "identities": [lorraine, docs],
        }
        dump = pg_dump(url)
        assert LORRAINE in dump
        assert not carries(dump, MCFLY)
        replayed = client.post(
            "/identify", json={"email": MCFLY, "phoneNumber": "717171"}, headers={"Idempotency-Key": "k1"}
        )
        assert replayed.headers.get("Idempotent-Replayed") == "true"
        assert MCFLY not in replayed.json()["contact"]["emails"]

    # The old checkout redelivered, then a new one: one partition, so the new one comes after it.
    send(
        stack.bootstrap,
        stack.topics.checkout,
        [CHECKOUTS[1], ("e4", "george@hillvalley.edu", "919191")],
    )
    stack.start("relay")
    wait_until(lambda: processed(url, SOURCE) == 4, 60, "the new checkout applied")
    wait_until(lambda: unpublished(url) == 0, 30, "everything published")
    live = db.execute("SELECT id, linked_id FROM contact WHERE deleted_at IS NULL ORDER BY id").fetchall()
    db.commit()
    assert live == [(1, None), (3, None), (4, 3), (5, None)], "the redelivery created nothing"
    assert check_invariants(db) == []
    assert not carries(pg_dump(url), MCFLY)

    after = reader.read_until(lambda m: len(m) >= before + 4)[before:]
    assert all(not carries(json.dumps(o.value, ensure_ascii=False), MCFLY) for o in after)
    erased = next(o for o in after if o.value["type"] == ERASED_TYPE)
    split = next(o for o in after if o.value["type"] == SPLIT_TYPE)
    source = f"{EVENT_SOURCE}:erasure"
    assert (erased.topic, erased.key, split.topic, split.key) == (
        stack.topics.erased,
        "1",
        stack.topics.split,
        "1",
    )
    assert erased.value["id"] == output_event_id(source, f"{request_id}:1", ERASED_TYPE)
    assert erased.value["data"] == {
        "erasureRequestId": request_id,
        "formerPrimaryId": 1,
        "erasedContactIds": [2],
    }
    assert split.value["id"] == output_event_id(source, f"{request_id}:1", SPLIT_TYPE)
    assert split.value["data"] == {
        "cause": {"type": "erasure", "id": request_id},
        "formerPrimaryId": 1,
        "identities": [lorraine, docs],
    }
    # Biff's event, written before the erasure and published after it, lost the value on the way.
    (biffs,) = [
        o for o in after if o.value["type"] == "identity.resolved" and o.value["data"]["contactId"] == 4
    ]
    assert biffs.value["data"]["contact"]["emails"] == [LORRAINE, DOC, BIFF]
