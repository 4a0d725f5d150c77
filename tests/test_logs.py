"""The log pipeline never renders a raw email or phone number, and leaves ids and offsets alone."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from consumer.config import Settings
from consumer.logs import configure_logging, mask, mask_personal_data, scrub
from consumer.normalize import Identifiers

EMAIL = "Lorraine.McFly@HillValley.edu"
PHONES = ["123456", "+1 (555) 010-0100", "555.010.0100", "+15550100100", "0044 20 7183 8750"]
EVENT_ID = "8c2f7a4e-1b3d-4f5a-9e6c-0d1e2f3a4b5c"

Render = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def rendered() -> Iterator[Render]:
    """Logging configured the way the services do it; returns a reader of the JSON lines written so far."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(Settings(log_format="json", log_level="DEBUG"))
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    output = io.StringIO()
    handler.setStream(output)

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in output.getvalue().splitlines()]

    yield read
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


def assert_no_personal_data(text: str) -> None:
    lowered = text.lower()
    assert EMAIL.lower() not in lowered
    for phone in PHONES:
        assert phone not in text
        assert "".join(c for c in phone if c.isdigit() or c == "+") not in text


@pytest.mark.parametrize("key", ["email", "phone", "phone_number", "phoneNumber", "Email", "PHONE"])
def test_values_under_personal_keys_are_masked(rendered: Render, key: str) -> None:
    structlog.get_logger("t").info("event received", **{key: EMAIL})
    (line,) = rendered()
    assert line[key] == mask(EMAIL)


def test_lists_under_personal_keys_are_masked(rendered: Render) -> None:
    structlog.get_logger("t").info("resolved", emails=[EMAIL, "b@c.d"], phoneNumbers=PHONES)
    (line,) = rendered()
    assert line["emails"] == [mask(EMAIL), mask("b@c.d")]
    assert line["phoneNumbers"] == [mask(p) for p in PHONES]


def test_nested_payloads_are_masked(rendered: Render) -> None:
    payload = {"data": {"email": EMAIL, "phoneNumber": 123456, "orderId": "o-1"}, "attempt": [{"phone": "1"}]}
    structlog.get_logger("t").warning("bad event", payload=payload)
    (line,) = rendered()
    assert line["payload"]["data"] == {"email": mask(EMAIL), "phoneNumber": mask("123456"), "orderId": "o-1"}
    assert line["payload"]["attempt"] == [{"phone": mask("1")}]


@pytest.mark.parametrize("phone", PHONES)
def test_values_embedded_in_messages_are_masked(rendered: Render, phone: str) -> None:
    log = structlog.get_logger("t")
    log.info(f"could not reconcile {EMAIL} with {phone}")
    log.error("rejected", reason=f"<{EMAIL}>; phone={phone}")
    text = json.dumps(rendered())
    assert_no_personal_data(text)
    assert mask(EMAIL) in text
    assert mask(phone) in text


def test_exception_text_is_masked(rendered: Render) -> None:
    log = structlog.get_logger("t")
    try:
        raise ValueError(f"duplicate key (email)=({EMAIL}) phone {PHONES[1]}")
    except ValueError:
        log.exception("transaction failed")
    try:
        raise RuntimeError(f"no match for {PHONES[0]}")
    except RuntimeError as exc:
        log.error("retrying", error=exc, exc_info=True)
    lines = rendered()
    assert len(lines) == 2
    assert "ValueError" in lines[0]["exception"]
    assert "RuntimeError" in lines[1]["exception"]
    assert_no_personal_data(json.dumps(lines))


def test_objects_holding_personal_data_are_masked(rendered: Render) -> None:
    structlog.get_logger("t").info("normalized", identifiers=Identifiers(EMAIL, "123456"))
    text = json.dumps(rendered())
    assert "Identifiers" in text
    assert_no_personal_data(text)


def test_standard_library_loggers_are_masked(rendered: Render) -> None:
    log = logging.getLogger("psycopg.test")
    log.warning("row for %s / %s", EMAIL, PHONES[2])
    try:
        raise KeyError(EMAIL)
    except KeyError:
        log.exception("lookup failed for %s", PHONES[3])
    lines = rendered()
    assert [line["logger"] for line in lines] == ["psycopg.test", "psycopg.test"]
    assert_no_personal_data(json.dumps(lines))


def test_ids_uuids_and_offsets_are_untouched(rendered: Render) -> None:
    fields = {
        "contact_id": 1234567,
        "contact_ids": [123456, 7654321],
        "offset": 98765432,
        "partition": 3,
        "event_id": EVENT_ID,
        "source": "urn:checkout:eu-1",
        "topic": "checkout.events",
        "order_id": "order-20230401-123456",
        "duration_ms": 1234.5678,
        "time": "2023-04-01T00:00:00+00:00",
    }
    structlog.get_logger("t").info(f"processed event {EVENT_ID} at offset 17", **fields)
    (line,) = rendered()
    assert line["event"] == f"processed event {EVENT_ID} at offset 17"
    assert {k: line[k] for k in fields} == fields


def test_masking_is_stable_and_not_reversible() -> None:
    assert mask(EMAIL) == mask(EMAIL)
    assert mask(EMAIL) != mask(EMAIL.lower())
    assert EMAIL not in mask(EMAIL)
    assert mask(EMAIL).startswith("sha256:")


def test_processor_leaves_non_string_values_alone() -> None:
    event = {"event": "x", "count": 3, "ok": True, "none": None, "email": None, "ratio": 0.5}
    assert mask_personal_data(None, "info", dict(event)) == event


@given(st.uuids())
def test_uuids_are_never_mistaken_for_phones(value: uuid.UUID) -> None:
    assert scrub(f"event {value} done") == f"event {value} done"


@pytest.mark.parametrize("value", [uuid.UUID(int=0), uuid.UUID("12345678-1234-4234-8234-123456789012")])
def test_all_digit_uuids_are_not_phones(value: uuid.UUID) -> None:
    assert scrub(f"event {value}") == f"event {value}"
    assert scrub(f"event {value}1") != f"event {value}1"


@given(
    st.from_regex(r"[a-z0-9._]{1,12}@[a-z0-9]{1,10}\.[a-z]{2,4}", fullmatch=True),
    st.from_regex(r"\+?[0-9]{6,15}", fullmatch=True),
    st.sampled_from(["{} ", "<{}>", "({})", "'{}'", '"{}"', "x={},", ":{}."]),
)
def test_scrub_masks_any_email_and_phone_in_text(email: str, phone: str, frame: str) -> None:
    text = f"got {frame.format(email)} and {frame.format(phone)} in a message"
    scrubbed = scrub(text)
    assert isinstance(scrubbed, str)
    assert email not in scrubbed
    assert phone not in scrubbed


@pytest.mark.parametrize(
    "text", ["listening on 127.0.0.1:8000", "HTTP/1.1 200", "day 2023-04-01", "batch of 12345 rows"]
)
def test_addresses_dates_and_short_numbers_stay_readable(text: str) -> None:
    assert scrub(text) == text


@pytest.mark.parametrize("phone", ["555.010.0100", "+44 20 7183 8750", "(415) 555-0100", "123456"])
def test_phone_shapes_close_to_addresses_and_dates_are_still_masked(phone: str) -> None:
    scrubbed = scrub(f"call {phone} now")
    assert isinstance(scrubbed, str)
    assert not any(c.isdigit() for c in re.sub(r"sha256:[0-9a-f]+", "", scrubbed))


def test_a_record_after_stderr_was_swapped_and_closed_goes_to_the_new_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pytest swaps sys.stderr and closes the old one; an atexit hook's late record must not fail."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    try:
        configure_logging(Settings(log_format="json"))
        monkeypatch.setattr("sys.stderr", second)
        first.close()
        logging.getLogger("late").warning("after the swap")
    finally:
        root.handlers[:], root.level = handlers, level
    assert json.loads(second.getvalue())["event"] == "after the swap"
