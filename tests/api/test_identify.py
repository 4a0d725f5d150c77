"""POST /identify on the spec's worked examples, and the outbox rows each call leaves behind."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg


def identify(client: httpx.Client, **body: object) -> dict[str, Any]:
    response = client.post("/identify", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    contact: dict[str, Any] = response.json()["contact"]
    assert contact["primaryContatctId"] == contact["primaryContactId"]
    return contact


def outbox(db: psycopg.Connection[Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = db.execute("SELECT event_type, payload FROM outbox_event ORDER BY outbox_id, position").fetchall()
    db.commit()
    return [(event_type, payload) for event_type, payload in rows]


def test_lorraine_and_mcfly_share_a_phone(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    lorraine = identify(client, email="lorraine@hillvalley.edu", phoneNumber="123456")
    mcfly = identify(client, email="mcfly@hillvalley.edu", phoneNumber=123456)

    primary = lorraine["primaryContactId"]
    assert lorraine == {
        "primaryContatctId": primary,
        "primaryContactId": primary,
        "emails": ["lorraine@hillvalley.edu"],
        "phoneNumbers": ["123456"],
        "secondaryContactIds": [],
    }
    (secondary,) = mcfly["secondaryContactIds"]
    expected = {
        "primaryContatctId": primary,
        "primaryContactId": primary,
        "emails": ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"],
        "phoneNumbers": ["123456"],
        "secondaryContactIds": [secondary],
    }
    assert mcfly == expected
    # Every way of naming this customer answers with the same identity, and adds no row.
    assert identify(client, email=None, phoneNumber="123456") == expected
    assert identify(client, email="lorraine@hillvalley.edu", phoneNumber=None) == expected
    assert identify(client, email=" McFly@HillValley.edu ") == expected
    assert identify(client, phoneNumber="12-34 56") == expected
    assert db.execute("SELECT count(*) FROM contact").fetchone() == (2,)


def test_george_and_biff_merge_when_a_request_bridges_them(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    george = identify(client, email="george@hillvalley.edu", phoneNumber="919191")
    biff = identify(client, email="biffsucks@hillvalley.edu", phoneNumber="717171")
    assert george["primaryContactId"] != biff["primaryContactId"]

    merged = identify(client, email="george@hillvalley.edu", phoneNumber="717171")

    assert merged == {
        "primaryContatctId": george["primaryContactId"],
        "primaryContactId": george["primaryContactId"],
        "emails": ["george@hillvalley.edu", "biffsucks@hillvalley.edu"],
        "phoneNumbers": ["919191", "717171"],
        "secondaryContactIds": [biff["primaryContactId"]],
    }
    assert db.execute("SELECT count(*) FROM contact").fetchone() == (2,)
    assert db.execute("SELECT count(*) FROM merge_log").fetchone() == (1,)


def test_outbox_rows_only_for_calls_that_change_data(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    identify(client, email="doc@hillvalley.edu", phoneNumber="555")
    assert [(t, p["data"]["outcome"]) for t, p in outbox(db)] == [("identity.resolved", "created_primary")]

    identify(client, email="doc@hillvalley.edu", phoneNumber="555")
    identify(client, phoneNumber="555")
    assert len(outbox(db)) == 1, "a call that changes nothing publishes nothing"

    identify(client, email="emmett@hillvalley.edu", phoneNumber="555")
    identify(client, email="clara@hillvalley.edu", phoneNumber="1885")
    identify(client, email="emmett@hillvalley.edu", phoneNumber="1885")
    events = outbox(db)
    assert [(t, p["data"].get("outcome")) for t, p in events[1:]] == [
        ("identity.resolved", "created_secondary"),
        ("identity.resolved", "created_primary"),
        ("identity.resolved", "merged"),
        ("identity.merged", None),
    ]
    resolved = events[-2][1]
    assert resolved["data"]["sourceEventSource"] == "identity-api"
    assert resolved["data"]["contactId"] is None
    assert events[-1][1]["data"]["mergedPrimaryIds"] == [events[2][1]["data"]["contactId"]]


def test_each_call_without_a_key_gets_its_own_random_uuid(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    for n in range(20):
        identify(client, email=f"marty{n}@hillvalley.edu")
    ids = [uuid.UUID(p["data"]["sourceEventId"]) for _, p in outbox(db)]
    assert len(set(ids)) == len(ids) == 20
    assert {i.version for i in ids} == {4}
