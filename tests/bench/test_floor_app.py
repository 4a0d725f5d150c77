"""The API benchmark's floor answers POST /identify's shape: a new customer gets a primary row, the
same email finds it again (one round trip per call, against the service's own tables)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from bench.api_bench import floor_process


def test_a_new_customer_gets_a_primary_that_the_next_call_finds(database_url: str, tmp_path: Path) -> None:
    email, phone = f"floor-{uuid.uuid4().hex}@shop.example", f"+1{uuid.uuid4().int % 10**10:010d}"
    with floor_process(database_url, workers=1, pool_size=2, log_dir=tmp_path) as floor:
        first = httpx.post(f"{floor.url}/identify", json={"email": email, "phoneNumber": phone})
        again = httpx.post(f"{floor.url}/identify", json={"email": email.upper()})
    assert first.status_code == again.status_code == 200
    contact = first.json()["contact"]
    assert (contact["emails"], contact["phoneNumbers"]) == ([email], [phone])
    assert contact["secondaryContactIds"] == []
    assert again.json()["contact"]["primaryContactId"] == contact["primaryContactId"]
