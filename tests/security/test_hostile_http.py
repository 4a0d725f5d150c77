"""Hand-written hostile bodies for POST /identify that schemathesis (tests/api/test_schemathesis.py)
does not produce and tests/api/test_errors.py does not cover: every one gets a clear 4xx, never a 5xx,
or is accepted and stored exactly as sent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.processes import ApiServer, api_server

REFUSED = [
    # (name, body, status, code, field)
    ("nesting 5,000 deep", b'{"email": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "malformed_json", None),
    ("lone surrogate in the email", b'{"email": "a\\ud800b@example.com"}', 400, "malformed_json", None),
    ("bytes that are not UTF-8", b'{"email": "\xff\xfe@example.com"}', 400, "malformed_json", None),
    ("a byte order mark", b'\xef\xbb\xbf{"email": "a@example.com"}', 400, "malformed_json", None),
    # Beyond Python's 4,300-digit limit for int <-> str the parser refuses the number itself.
    ("a 5,000-digit phone number", b'{"phoneNumber": ' + b"1" * 5000 + b"}", 400, "malformed_json", None),
    ("a 100-digit phone number", b'{"phoneNumber": ' + b"7" * 100 + b"}", 422, "too_long", "phoneNumber"),
    ("a phone of 1e400", b'{"phoneNumber": 1e400}', 422, "invalid_type", "phoneNumber"),
    ("a phone that is only a plus", b'{"phoneNumber": "+"}', 422, "invalid_phone", "phoneNumber"),
    ("a phone that is SQL", b'{"phoneNumber": "1; DROP TABLE contact"}', 422, "invalid_phone", "phoneNumber"),
    ("a NUL in the phone", b'{"phoneNumber": "55\\u00000"}', 422, "invalid_phone", "phoneNumber"),
]

STORED_AS_SENT = [
    # (name, body, the email or phone the answer must hold)
    (
        "SQL in the email",
        {"email": "x'); DROP TABLE contact; --@example.com"},
        "x'); drop table contact; --@example.com",
    ),
    (
        "control characters in the email",
        {"email": "bell\u0007esc\u001b@example.com"},
        "bell\u0007esc\u001b@example.com",
    ),
    (
        "a right-to-left override in the email",
        {"email": "\u202etxt.exe@example.com"},
        "\u202etxt.exe@example.com",
    ),
    ("a 15-digit float phone", {"phoneNumber": 1e14}, "100000000000000"),
    (
        "a long orderId is ignored",
        {"email": "order@example.com", "orderId": "x" * 15_000},
        "order@example.com",
    ),
]


@pytest.fixture(scope="module")
def api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with api_server(database_url, tmp_path_factory.mktemp("api")) as server:
        yield server


def post(api: ApiServer, body: bytes | dict[str, Any]) -> httpx.Response:
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    return httpx.post(
        api.url + "/identify",
        content=content,
        headers={"content-type": "application/json", **api.headers},
        timeout=30,
    )


@pytest.mark.parametrize(("name", "body", "status", "code", "field"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_a_clear_4xx(
    api: ApiServer, name: str, body: bytes, status: int, code: str, field: str | None
) -> None:
    response = post(api, body)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    assert response.json()["error"]["field"] == field


@pytest.mark.parametrize(("name", "body", "stored"), STORED_AS_SENT, ids=[c[0] for c in STORED_AS_SENT])
def test_accepted_and_stored_as_sent(api: ApiServer, name: str, body: dict[str, Any], stored: str) -> None:
    response = post(api, body)
    assert response.status_code == 200, response.text
    contact = response.json()["contact"]
    assert stored in contact["emails"] + contact["phoneNumbers"]
    again = httpx.get(
        f"{api.url}/contacts/{contact['primaryContactId']}", headers=api.headers, timeout=10
    ).json()["contact"]
    assert again == contact
