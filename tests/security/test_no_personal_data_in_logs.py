"""A full run of worker, relay and API at DEBUG with known personal values, through the paths that
carry them (matches, merges, dead letters, reused keys, HTTP errors, validation messages): no log line
of any process holds an email, a local part or a phone number, in any spelling; nor an API key, good or
bad, whole or its secret part.

tests/test_logs.py checks the masking processor itself; this checks what the processes really print.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.support.database import processed, unpublished
from tests.support.kafka import Record, envelope, produce, structured
from tests.support.keys import bearer, secret_of
from tests.support.polling import wait_until
from tests.support.processes import api_server
from tests.support.stack import Stack

EMAILS = [
    "Lorraine.Baines@HillValley.edu",
    "calvin.klein@enchantment-dance.org",
    "biff.tannen@pleasure.paradise",
]
PHONES = ["+1 (555) 867-5309", "0151 2345 6789", "4155550123"]
BAD_PHONE = "555-CALL-DOC"
BAD_EMAIL = "george.mcfly at hillvalley.edu"
WRONG_KEY = "idk_0123456789ab_" + "Z" * 43


def needles() -> set[str]:
    """Every spelling that would give a value away, lowercased."""
    found = set()
    for email in [*EMAILS, BAD_EMAIL]:
        found |= {email.lower(), email.split("@")[0].split(" ")[0].lower()}
    for phone in PHONES:
        digits = re.sub(r"\D", "", phone)
        found |= {phone.lower(), digits, digits[-7:]}
    found.add(BAD_PHONE.lower())
    return found


def events() -> list[Record]:
    e1, e2, e3 = EMAILS
    p1, p2, p3 = PHONES
    good = [
        envelope("pii-1", e1, p1),
        envelope("pii-2", e2, p2),
        envelope("pii-3", e1, p2),  # merges the first two customers
        envelope("pii-4", e3, p3),
        envelope("pii-5", e3.upper(), None),
    ]
    bad = [
        envelope("pii-6", e1, BAD_PHONE),
        envelope("pii-7", BAD_EMAIL, p1),
        envelope("pii-1", e2, p3),  # the key of pii-1 reused with another payload
        {**envelope("pii-8", e1, p1), "specversion": "0.3"},
    ]
    return [structured(e) for e in good + bad] + [
        Record(f'{{"email": "{e1}", "phoneNumber": "{p1}"'.encode())
    ]


def dead_letters(stack: Stack) -> int:
    return sum(1 for s in stack.services for e in s.logs() if e.get("event") == "dead-lettered")


def test_no_log_line_holds_personal_data(stack: Stack, tmp_path: Path) -> None:
    stack.env.update({"LOG_LEVEL": "DEBUG", "EMAIL_VALIDATION": "true"})
    env = {"LOG_LEVEL": "DEBUG", "API_ACCESS_LOG": "true", "EMAIL_VALIDATION": "true"}
    with api_server(stack.database_url, tmp_path, env=env) as api:
        stack.start("worker")
        stack.start("relay")
        produce(stack.bootstrap, stack.topics.checkout, events())
        with httpx.Client(base_url=api.url, headers=api.headers, timeout=10) as http:
            e1, e2, e3 = EMAILS
            ok = http.post("/identify", json={"email": e3, "phoneNumber": PHONES[0]})  # merges over HTTP
            assert ok.status_code == 200
            contact_id = ok.json()["contact"]["primaryContactId"]
            assert http.get(f"/contacts/{contact_id}").status_code == 200
            assert http.post("/identify", json={"email": BAD_EMAIL}).status_code == 422
            assert http.post("/identify", json={"phoneNumber": BAD_PHONE}).status_code == 422
            assert http.post("/identify", json={"email": e1, "phoneNumber": True}).status_code == 422
            assert http.post("/identify", content=f'{{"email": "{e2}"'.encode()).status_code == 400
            key = {"Idempotency-Key": "pii-call"}
            assert http.post("/identify", json={"email": e2}, headers=key).status_code == 200
            assert http.post("/identify", json={"email": e1}, headers=key).status_code == 409
            assert http.post("/identify", json={"email": e1}, headers=bearer(WRONG_KEY)).status_code == 401
            assert (
                http.get(f"/contacts/{contact_id}", headers=bearer("hunter2-" + WRONG_KEY)).status_code == 401
            )
        wait_until(lambda: processed(stack.database_url) == 5, 60, "the good events")
        wait_until(lambda: unpublished(stack.database_url) == 0, 60, "every output published")
        wait_until(lambda: dead_letters(stack) == 5, 30, "the dead letters")
    stack.close()

    logs = [*stack.logs(), *tmp_path.glob("api-*.log")]
    text = {path.name: path.read_text(errors="replace").lower() for path in logs}
    assert all(text.values()), "a process logged nothing: the test would prove nothing"
    secrets = {k.lower() for key in (api.key, WRONG_KEY) for k in (key, secret_of(key))}
    leaks = [(name, n) for name, body in text.items() for n in needles() | secrets if n in body]
    assert leaks == [], leaks
