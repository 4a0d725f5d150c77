"""docs/schemas/ stays what the contract models generate, and real events validate against it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, ValidationError

from consumer import schemas
from consumer.config import Settings
from consumer.core.graph import ContactView
from producer_tools import CheckoutProducer, synthetic_records
from tests.support.samples import story_events


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((schemas.SCHEMA_DIR / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_checked_in_schemas_match_the_models() -> None:
    assert schemas.drift() == [], "run `python -m consumer.schemas` and commit docs/schemas/"
    assert schemas.main(["--check"]) == 0


def test_check_reports_missing_or_changed_files(tmp_path: Path) -> None:
    assert schemas.main(["--check", "--dir", str(tmp_path)]) == 1
    assert schemas.main(["--dir", str(tmp_path)]) == 0
    assert schemas.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "identity.merged.json").write_text("{}")
    assert schemas.drift(tmp_path) == ["identity.merged.json"]


def test_core_output_events_validate() -> None:
    events = story_events()
    assert {e.event_type for e in events} == {"identity.resolved", "identity.merged"}
    for event in events:
        _validator(f"{event.event_type}.json").validate(event.payload)


def test_producer_events_validate() -> None:
    producer = CheckoutProducer("127.0.0.1:1", settings=Settings(), config={"log_level": 0})
    validator = _validator("checkout.completed.json")
    for record in synthetic_records(50, 500, seed=3):
        assert record.event_id is not None
        message = producer.message(
            record.email, record.phone, event_id=record.event_id, order_id=record.order_id, time=record.time
        )
        validator.validate(json.loads(message.value))
    numeric_phone = producer.message(None, 5550100, event_id="n-1", time=datetime.now(UTC))
    validator.validate(json.loads(numeric_phone.value))


def test_identify_response_validates() -> None:
    view = ContactView(1, ("ada@example.com",), ("111", "222"), (2, 3))
    _validator("identify-response.json").validate({"contact": view.document()})


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"type": "checkout.cancelled"}, "another event type"),
        ({"specversion": None}, "no specversion"),
        ({"data": {"email": "a@example.com", "phoneNumber": True}}, "a boolean phone"),
        ({"data": {"email": {"address": "a@example.com"}}}, "an object email"),
    ],
)
def test_the_checkout_schema_rejects_contract_violations(change: dict[str, Any], why: str) -> None:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "urn:shop",
        "type": "checkout.completed",
        "time": "2026-01-01T00:00:00Z",
        "data": {"email": "a@example.com", "phoneNumber": "111"},
    }
    _validator("checkout.completed.json").validate(event)
    event.update(change)
    event = {k: v for k, v in event.items() if v is not None}
    with pytest.raises(ValidationError):
        _validator("checkout.completed.json").validate(event)
