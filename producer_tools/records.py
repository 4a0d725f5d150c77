"""Checkout records: what one `checkout.completed` event carries, and how replay files are read.

A replay file is JSON lines (one object per line) or CSV with a header row. Accepted fields:

========================  ==================================================================
field (alias)             meaning
========================  ==================================================================
``email``                 the buyer's email, raw (normalized only for the message key)
``phoneNumber`` (phone)   the buyer's phone, raw; a string, or in JSON lines also an integer
``orderId`` (order_id)    optional order reference, string or integer
``id`` (event_id)         optional event id; a fresh uuid4 when absent
``time``                  optional ISO 8601 time; now when absent, UTC when it has no offset
========================  ==================================================================

Empty CSV cells mean "absent". Other fields are ignored. Blank lines are skipped.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from consumer.normalize import IdentifierError, Normalizer

FileFormat = Literal["jsonl", "csv"]

_ALIASES = {
    "email": "email",
    "phoneNumber": "phoneNumber",
    "phone": "phoneNumber",
    "orderId": "orderId",
    "order_id": "orderId",
    "id": "id",
    "event_id": "id",
    "time": "time",
}


@dataclass(slots=True)
class CheckoutRecord:
    """One checkout: raw identifiers as the checkout pipeline saw them, plus optional event metadata.

    Not frozen: a frozen dataclass takes four times as long to build, and the generator builds 100k+/s.
    """

    email: str | None = None
    phone: str | int | None = None
    order_id: str | int | None = None
    event_id: str | None = None
    time: datetime | None = None

    def to_json(self) -> dict[str, object]:
        """The replay-file form (JSON lines), which `read_records` reads back unchanged."""
        row: dict[str, object] = {"email": self.email, "phoneNumber": self.phone}
        if self.order_id is not None:
            row["orderId"] = self.order_id
        if self.event_id is not None:
            row["id"] = self.event_id
        if self.time is not None:
            row["time"] = format_time(self.time)
        return row


class RecordError(ValueError):
    """A line that cannot become an event; `reason` is a short code, the message holds no personal data."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int
    error: RecordError

    def __str__(self) -> str:
        return f"line {self.line}: {self.error.reason}: {self.error}"


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, as CloudEvents writes it."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.strip())
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def detect_format(path: Path) -> FileFormat:
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def read_records(
    path: Path, normalizer: Normalizer, file_format: FileFormat | None = None
) -> Iterator[tuple[int, CheckoutRecord | BadLine]]:
    """(line number, record or why the line was rejected), in file order; 1-based physical line numbers."""
    with path.open(newline="", encoding="utf-8") as handle:
        if (file_format or detect_format(path)) == "csv":
            reader = csv.DictReader(handle)
            columns = {_ALIASES.get(name) for name in reader.fieldnames or ()}
            if not columns & {"email", "phoneNumber"}:
                raise RecordError("no_identifier_columns", "the CSV header names no email or phone column")
            for row in reader:
                line = reader.line_num
                cells = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
                yield line, _checked(line, cells, normalizer)
        else:
            for line, text in enumerate(handle, start=1):
                if text.strip():
                    yield line, _from_json_line(line, text, normalizer)


def _from_json_line(line: int, text: str, normalizer: Normalizer) -> CheckoutRecord | BadLine:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return BadLine(line, RecordError("invalid_json", f"not valid JSON ({exc.msg} at column {exc.colno})"))
    if not isinstance(value, dict):
        return BadLine(line, RecordError("not_an_object", "a line must hold one JSON object"))
    return _checked(line, value, normalizer)


def _checked(line: int, fields: Mapping[str, object], normalizer: Normalizer) -> CheckoutRecord | BadLine:
    try:
        return record_from_fields(fields, normalizer)
    except RecordError as exc:
        return BadLine(line, exc)


def record_from_fields(fields: Mapping[str, object], normalizer: Normalizer) -> CheckoutRecord:
    """Validate one row; raises `RecordError` whose message never repeats the row's values."""
    known = {_ALIASES[k]: v for k, v in fields.items() if k in _ALIASES}
    email, phone = known.get("email"), known.get("phoneNumber")
    try:
        normalizer.identifiers(email, phone)
    except IdentifierError as exc:
        raise RecordError(exc.reason, str(exc)) from None
    order_id = known.get("orderId")
    if order_id is not None and (isinstance(order_id, bool) or not isinstance(order_id, str | int)):
        raise RecordError("invalid_type", "orderId must be a string or an integer")
    event_id = known.get("id")
    if event_id is not None and (not isinstance(event_id, str) or not event_id.strip()):
        raise RecordError("invalid_id", "id must be a non-empty string")
    raw_time = known.get("time")
    time: datetime | None = None
    if raw_time is not None:
        if not isinstance(raw_time, str):
            raise RecordError("invalid_time", "time must be an ISO 8601 string")
        try:
            time = parse_time(raw_time)
        except ValueError:
            raise RecordError("invalid_time", "time is not an ISO 8601 date-time") from None
    # The normalizer accepted them, so each is absent, a string, or (a phone) an integral number.
    assert email is None or isinstance(email, str)
    assert phone is None or isinstance(phone, str | int | float)
    return CheckoutRecord(
        email=email,
        phone=int(phone) if isinstance(phone, float) else phone,
        order_id=order_id,
        event_id=event_id,
        time=time,
    )
