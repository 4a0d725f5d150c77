"""An Idempotency-Key makes a retry return the first answer, applied once; a reused key is refused."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg


def counts(db: psycopg.Connection[Any]) -> tuple[int, int]:
    row = db.execute("SELECT (SELECT count(*) FROM contact), (SELECT count(*) FROM outbox_event)").fetchone()
    db.commit()
    assert row is not None
    return row[0], row[1]


def remembered(db: psycopg.Connection[Any]) -> list[str]:
    """The keys of the calls with an idempotency record (only keyed calls can ever be retried), without
    the client's name that scopes them."""
    ids = [row[0].split("/", 1)[1] for row in db.execute("SELECT event_id FROM processed_event ORDER BY 1")]
    db.commit()
    return ids


def test_a_retry_returns_the_first_answer_without_applying_twice(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    key = {"Idempotency-Key": "order-1955-11-05"}
    first = client.post(
        "/identify", json={"email": "marty@hillvalley.edu", "phoneNumber": "1955"}, headers=key
    )
    assert first.status_code == 200
    assert "idempotent-replayed" not in first.headers
    after_first = counts(db)

    # The graph moves on: the same customer gains a phone, so a fresh answer would differ.
    client.post("/identify", json={"email": "marty@hillvalley.edu", "phoneNumber": "1985"})
    after_second = counts(db)

    retry = client.post(
        "/identify", json={"email": "marty@hillvalley.edu", "phoneNumber": "1955"}, headers=key
    )
    assert retry.status_code == 200
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()
    assert after_first == (1, 1)
    assert counts(db) == after_second == (2, 2)
    assert remembered(db) == ["order-1955-11-05"], "a call without a key leaves no idempotency record"


def test_a_key_reused_with_another_body_is_a_409_and_applies_nothing(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    key = {"Idempotency-Key": "order-2015-10-21"}
    assert client.post("/identify", json={"email": "marty@hillvalley.edu"}, headers=key).status_code == 200
    before = counts(db)

    response = client.post("/identify", json={"email": "jennifer@hillvalley.edu"}, headers=key)

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert error["field"] == "Idempotency-Key"
    assert "jennifer" not in response.text
    assert counts(db) == before


def test_the_same_body_with_different_formatting_is_the_same_request(client: httpx.Client) -> None:
    key = {"Idempotency-Key": "order-1885-09-02"}
    first = client.post(
        "/identify", json={"email": "Doc@HillValley.edu", "phoneNumber": "18-85"}, headers=key
    )
    retry = client.post("/identify", json={"email": "doc@hillvalley.edu", "phoneNumber": 1885}, headers=key)
    assert retry.status_code == 200
    assert retry.json() == first.json()
