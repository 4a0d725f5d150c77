"""GET /contacts/{id}/explain and POST /erasure-requests over HTTP (rules 17-18, docs/api.md)."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from consumer.contract import ErasureResponse, ExplainResponse
from tests.core.helpers import contacts

LORRAINE, MCFLY, DOC = "lorraine@hillvalley.edu", "mcfly@hillvalley.edu", "doc@hillvalley.edu"


def story(client: httpx.Client) -> None:
    for body in (
        {"email": LORRAINE, "phoneNumber": "123456"},
        {"email": MCFLY, "phoneNumber": "123456"},
        {"email": DOC, "phoneNumber": "717171"},
        {"email": MCFLY, "phoneNumber": "717171"},
    ):
        assert client.post("/identify", json=body).status_code == 200


def test_explain_with_a_path(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    story(client)

    response = client.get("/contacts/3/explain", params={"to": 1})

    assert response.status_code == 200
    document = response.json()
    ExplainResponse.model_validate(document)
    assert [r["link"] for r in document["rows"]][1:] == [
        {"to": 1, "kind": "phone", "email": None, "phoneNumber": "123456"},
        {"to": 2, "kind": "merge", "email": MCFLY, "phoneNumber": "717171"},
    ]
    assert [(s["from"], s["to"], s["link"]["kind"]) for s in document["path"]["steps"]] == [
        (3, 2, "merge"),
        (2, 1, "phone"),
    ]
    assert [h["type"] for h in document["history"]] == ["merge"]


def test_explain_errors(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    story(client)
    client.post("/identify", json={"email": "george@hillvalley.edu"})

    assert client.get("/contacts/99/explain").json()["error"]["code"] == "contact_not_found"
    other = client.get("/contacts/1/explain", params={"to": 4})
    assert (other.status_code, other.json()["error"]["code"]) == (409, "not_same_identity")
    cursor = client.get("/contacts/1/explain", params={"historyAfter": "nope"})
    assert (cursor.status_code, cursor.json()["error"]["field"]) == (422, "historyAfter")


def test_erasure_request(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    story(client)

    dry = client.post(
        "/erasure-requests", params={"dryRun": "true"}, json={"email": " McFly@HillValley.edu "}
    )
    assert dry.status_code == 200
    assert dry.json()["erasureRequestId"] is None
    assert any(r.email == MCFLY for r in contacts(db))

    response = client.post("/erasure-requests", json={"email": " McFly@HillValley.edu "})

    assert response.status_code == 200
    body = response.json()
    ErasureResponse.model_validate(body)
    assert body["erasedContactIds"] == [2]
    assert [(v["primaryContactId"], v["emails"]) for v in body["identities"]] == [(1, [LORRAINE]), (3, [DOC])]
    assert dry.json() == {**body, "erasureRequestId": None}
    assert all(r.email != MCFLY for r in contacts(db))
    again = client.post("/erasure-requests", json={"email": MCFLY}).json()
    assert (again["erasedContactIds"], again["identities"]) == ([], [])
    assert again["erasureRequestId"] == body["erasureRequestId"] + 1


def test_erasure_request_needs_exactly_one_value(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    both = client.post("/erasure-requests", json={"email": MCFLY, "phoneNumber": "123456"})
    assert (both.status_code, both.json()["error"]["code"]) == (422, "one_identifier")
    assert client.post("/erasure-requests", json={}).status_code == 400
    assert client.post("/erasure-requests", json={"phoneNumber": True}).status_code == 422
    phone = client.post("/erasure-requests", json={"phoneNumber": 5550100})
    assert phone.status_code == 200
    assert phone.json()["erasedContactIds"] == []
