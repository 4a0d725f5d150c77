"""Configured limits and EMAIL_VALIDATION=true, end to end: an identifier longer than its limit or an
invalid address is refused by the API (422) and by the worker (dead letter), with a message that names
the field and never quotes the value."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from consumer.worker.decode import header_dict
from tests.support.kafka import envelope, produce, read_topic, structured
from tests.support.polling import wait_until
from tests.support.processes import api_server
from tests.support.stack import Stack
from tests.support.topics import Topics

LIMITS = {"EMAIL_VALIDATION": "true", "EMAIL_MAX_LENGTH": "40", "PHONE_MAX_LENGTH": "12"}

# (email, phone, field, API error code, words the message must hold)
REFUSED = [
    ("doc.brown@@hillvalley", None, "email", "invalid_email", ["email"]),
    ("doc.brown at hillvalley.edu", "5550100", "email", "invalid_email", ["email"]),
    ("emmett.lathrop.brown.1885@hillvalley-courthouse.edu", None, "email", "too_long", ["email", "40"]),
    (None, "+1 (555) 0100-9999-12", "phoneNumber", "too_long", ["phoneNumber", "12"]),
    ("doc@hillvalley.edu", "1" * 13, "phoneNumber", "too_long", ["phoneNumber", "12"]),
]


@pytest.fixture(scope="module")
def limited_api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    with api_server(database_url, tmp_path_factory.mktemp("api"), env=LIMITS) as server:
        yield server


@pytest.mark.parametrize(("email", "phone", "field", "code", "words"), REFUSED)
def test_the_api_refuses_naming_the_field(
    limited_api: Any, email: str | None, phone: str | None, field: str, code: str, words: list[str]
) -> None:
    response = httpx.post(
        limited_api.url + "/identify",
        json={"email": email, "phoneNumber": phone},
        headers=limited_api.headers,
        timeout=10,
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert all(word in error["message"] for word in words), error["message"]
    for value in (email, phone):
        assert value is None or value not in response.text


def test_the_api_accepts_what_is_within_the_limits(limited_api: Any) -> None:
    body = {"email": "Doc@HillValley.edu", "phoneNumber": "+1 555 0100"}
    response = httpx.post(limited_api.url + "/identify", json=body, headers=limited_api.headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["contact"]["emails"] == ["doc@hillvalley.edu"]


def test_the_worker_dead_letters_naming_the_field(
    database_url: str, kafka_bootstrap: str, tmp_path: Path, db: psycopg.Connection[Any]
) -> None:
    stack = Stack(database_url, kafka_bootstrap, Topics.create(kafka_bootstrap, 1), tmp_path, env=LIMITS)
    events = [envelope(f"lim-{uuid.uuid4().hex}", email, phone) for email, phone, *_ in REFUSED]
    valid = envelope("lim-valid", "Doc@HillValley.edu", "+1 555 0100")
    try:
        stack.start("worker")
        produce(kafka_bootstrap, stack.topics.checkout, [structured(e) for e in [*events, valid]])
        letters = read_topic(kafka_bootstrap, stack.topics.dlq, len(events))
        wait_until(
            lambda: bool(db.execute("SELECT 1 FROM processed_event WHERE event_id = 'lim-valid'").fetchone()),
            30,
            "the valid event",
        )
    finally:
        stack.close()
    for letter, (email, phone, field, _, words) in zip(
        sorted(letters, key=lambda m: m.offset() or 0), REFUSED, strict=True
    ):
        headers = header_dict(letter.headers())
        message = headers["error.message"].decode()
        assert headers["error.reason"] == b"invalid_identifier"
        assert message.startswith(field), message
        assert all(word in message for word in words), message
        for value in (email, phone):
            assert value is None or value not in message
