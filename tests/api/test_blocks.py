"""Rule 12 over HTTP, and the blocked-values routes (rules 12-16)."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from consumer.contract import SplitData
from tests.support.http import error

DOC = {"email": "doc@hillvalley.edu", "phoneNumber": "555-0100"}
MARTY = {"email": "marty@hillvalley.edu", "phoneNumber": "555-0100"}


@pytest.fixture(autouse=True)
def empty(db: psycopg.Connection[Any]) -> None:
    """Every test starts from an empty database (the `db` fixture empties it)."""


def block(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/blocked-values", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_an_input_of_blocked_values_only_gets_422_blocked_identifier(client: httpx.Client) -> None:
    block(client, phoneNumber="555 0100", reason="the shop's till")
    error(client.post("/identify", json={"phoneNumber": "(555) 0100"}), 422, "blocked_identifier")


def test_a_junk_pattern_gets_422_blocked_identifier(client: httpx.Client) -> None:
    error(client.post("/identify", json={"email": "Test@Test.com"}), 422, "blocked_identifier")
    error(client.post("/identify", json={"phoneNumber": "000-000-0000"}), 422, "blocked_identifier")


def test_a_blocked_value_beside_a_good_one_is_ignored(client: httpx.Client) -> None:
    doc = client.post("/identify", json=DOC).json()["contact"]
    block(client, phoneNumber="5550100")
    marty = client.post("/identify", json=MARTY).json()["contact"]
    assert marty["primaryContactId"] != doc["primaryContactId"]
    assert (marty["emails"], marty["phoneNumbers"]) == (["marty@hillvalley.edu"], [])


def test_block_splits_and_unblock_merges_again(client: httpx.Client) -> None:
    doc = client.post("/identify", json=DOC).json()["contact"]
    marty = client.post("/identify", json=MARTY).json()["contact"]
    assert marty["primaryContactId"] == doc["primaryContactId"]

    created = block(client, phoneNumber="555.0100", reason="call centre")

    assert {k: created["block"][k] for k in ("kind", "value", "reason", "note", "identityId")} == {
        "kind": "phone",
        "value": "5550100",
        "reason": "operator",
        "note": "call centre",
        "identityId": doc["primaryContactId"],
    }
    (split,) = [SplitData.model_validate(s) for s in created["splits"]]
    assert [i.emails for i in split.identities] == [["doc@hillvalley.edu"], ["marty@hillvalley.edu"]]
    listed = client.get("/blocked-values").json()
    assert [b["id"] for b in listed["items"]] == [created["block"]["id"]]
    assert listed["next"] is None

    removed = client.delete(f"/blocked-values/{created['block']['id']}")

    assert removed.status_code == 200, removed.text
    (merged,) = removed.json()["merged"]
    assert merged["survivingPrimaryId"] == doc["primaryContactId"]
    assert merged["contact"]["emails"] == ["doc@hillvalley.edu", "marty@hillvalley.edu"]
    assert client.get("/blocked-values").json()["items"] == []
    error(client.delete(f"/blocked-values/{created['block']['id']}"), 404, "not_found")


def test_blocking_a_blocked_value_is_a_conflict(client: httpx.Client) -> None:
    block(client, email="Doc@HillValley.edu")
    error(client.post("/blocked-values", json={"email": "doc@hillvalley.edu"}), 409, "already_blocked")
    error(client.post("/blocked-values", json={"email": "test@test.com"}), 409, "already_blocked")


def test_a_block_names_exactly_one_valid_value(client: httpx.Client) -> None:
    error(client.post("/blocked-values", json=DOC), 422, "one_value")
    error(client.post("/blocked-values", json={}), 400, "no_identifiers")
    error(client.post("/blocked-values", json={"phoneNumber": True}), 422, "invalid_type", "phoneNumber")


def test_the_blocklist_pages_and_filters(client: httpx.Client) -> None:
    ids = [block(client, email=f"till{n}@shop.io")["block"]["id"] for n in range(5)]
    first = client.get("/blocked-values", params={"limit": 2}).json()
    second = client.get("/blocked-values", params={"limit": 2, "after": first["next"]}).json()
    last = client.get("/blocked-values", params={"limit": 2, "after": second["next"]}).json()
    assert [b["id"] for page in (first, second, last) for b in page["items"]] == ids
    assert last["next"] is None
    assert client.get("/blocked-values", params={"reason": "fan_out"}).json()["items"] == []
    error(client.get("/blocked-values", params={"reason": "spam"}), 422, "invalid_query", "reason")
