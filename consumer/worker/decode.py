"""One Kafka record -> a reconciliation `Input`, or the reason it goes to the dead-letter topic.

Both CloudEvents 1.0 content modes are accepted: structured (the value is the JSON envelope) and binary
(`ce_*` headers, the value is `data`). The `cloudevents` Kafka binding does the mode detection and the
envelope parsing; the factory below adds what the binding leaves out for our contract (`id` and
`specversion` must be present rather than defaulted, naive times are UTC, ids fit the database).

Dead-letter messages never quote the input: only attribute names and fixed explanations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consumer.contract import CHECKOUT_TYPE, CheckoutData
from consumer.core import Input
from consumer.normalize import IdentifierError, MissingIdentifiers, Normalizer, storable

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
# (source, id) is the primary key of processed_event; a B-tree entry must stay under ~2.7 kB.
MAX_KEY_LENGTH = 256
_KNOWN_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "dataschema"}
)
_FORMAT = JSONFormat()
_USUAL_HEADERS = [("content-type", STRUCTURED_CONTENT_TYPE.encode())]

HeaderValue = str | bytes | None
Headers = Sequence[tuple[str, HeaderValue]] | Mapping[str, HeaderValue]


class Reason(StrEnum):
    """`error.reason` header values."""

    UNDECODABLE = "undecodable"
    INVALID_EVENT = "invalid_event"
    INVALID_IDENTIFIER = "invalid_identifier"
    NO_IDENTIFIERS = "no_identifiers"
    KEY_REUSED = "key_reused"
    BLOCKED_IDENTIFIER = "blocked_identifier"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: Reason
    message: str
    """Human-readable, with no input values in it (it is stored in a header and logged)."""


class _Rejected(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.dead_letter = DeadLetter(reason, message)


def decode(value: bytes | None, headers: Headers | None, normalizer: Normalizer) -> Input | DeadLetter:
    """Never raises: anything that is not a usable `checkout.completed` event becomes a `DeadLetter`."""
    try:
        # The usual record has only the structured content type: no header to look through.
        if value and headers == _USUAL_HEADERS:
            fast = _structured_fast_path(value, normalizer)
            if fast is not None:
                return fast
        return _decode(value, header_dict(headers), normalizer)
    except _Rejected as exc:
        return exc.dead_letter
    except Exception as exc:  # the binding's parser raises many types; none may stop a partition
        return DeadLetter(Reason.INVALID_EVENT, f"not a valid CloudEvents envelope ({type(exc).__name__})")


def _decode(value: bytes | None, headers: dict[str, bytes], normalizer: Normalizer) -> Input:
    if not value:
        raise _Rejected(Reason.UNDECODABLE, "the record has no value")
    binary = any(name.lower().startswith("ce_") for name in headers)
    if not binary:
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        if content_type is not None and not _is_structured(content_type):
            raise _Rejected(
                Reason.INVALID_EVENT,
                f"a record without ce_* headers must be a structured event ({STRUCTURED_CONTENT_TYPE})",
            )
        if (fast := _structured_fast_path(value, normalizer)) is not None:
            return fast
    factory = _Factory()
    try:
        event = from_kafka(KafkaMessage(headers, None, value), _FORMAT, factory)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _Rejected(Reason.UNDECODABLE, "the record (or a ce_ header) is not valid UTF-8 JSON") from None
    except CloudEventValidationError as exc:
        names = sorted(name for name in exc.errors if name in _KNOWN_ATTRIBUTES)
        detail = ", ".join(names) if names else "an extension attribute name"
        raise _Rejected(Reason.INVALID_EVENT, f"invalid CloudEvents attribute(s): {detail}") from None
    except ValueError:
        # dateutil's isoparse on `time`, base64 of `data_base64`, a JSON value that is not an object.
        raise _Rejected(Reason.INVALID_EVENT, "not a valid CloudEvents 1.0 envelope") from None

    data = event.get_data()
    if not isinstance(data, dict):
        if binary and isinstance(data, bytes | str):
            raise _Rejected(Reason.UNDECODABLE, "the binary-mode value is not a JSON object")
        raise _Rejected(Reason.INVALID_EVENT, "data must be a JSON object")
    try:
        checkout = CheckoutData.model_validate(data, strict=True)
    except ValidationError as exc:
        fields = sorted({".".join(map(str, e["loc"][:1])) for e in exc.errors()})
        raise _Rejected(Reason.INVALID_EVENT, f"invalid data field(s): {', '.join(fields)}") from None
    return _request(checkout, event.get_source(), event.get_id(), factory.time, normalizer)


# Times the general parser (dateutil) and datetime.fromisoformat read alike.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?")


class _PlainStructuredEvent(BaseModel):
    """The usual structured event, strictly (`data` too: validated with strict=True): anything else takes
    the general path."""

    model_config = ConfigDict(extra="forbid", strict=True)

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=MAX_KEY_LENGTH)
    source: str = Field(min_length=1, max_length=MAX_KEY_LENGTH)
    type: Literal["checkout.completed"]
    time: str | None = None
    datacontenttype: Literal["application/json"] | None = None
    subject: str | None = Field(None, min_length=1)
    data: CheckoutData


_OPTIONAL_ATTRIBUTES = ("time", "datacontenttype", "subject")


def _structured_fast_path(value: bytes, normalizer: Normalizer) -> Input | None:
    """Most events: parsed in one pass by pydantic-core, several times faster than the general binding.

    Returns None, never a verdict, for anything unusual: the general path then decides, so both paths
    accept exactly the same events and every rejection keeps its precise reason.
    """
    try:
        event = _PlainStructuredEvent.model_validate_json(value, strict=True)
        sent = event.model_fields_set
        if any(getattr(event, name) is None for name in _OPTIONAL_ATTRIBUTES if name in sent):
            return None  # an optional attribute sent as null: the general path says what is wrong
        if event.time is not None and not _RFC3339.fullmatch(event.time):
            return None
        time = None if event.time is None else datetime.fromisoformat(event.time)
    except (ValidationError, ValueError):
        return None
    if not (storable(event.id) and storable(event.source)):
        return None
    if time is not None and time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    return _request(event.data, event.source, event.id, time, normalizer)


def _request(
    checkout: CheckoutData, source: str, event_id: str, time: datetime | None, normalizer: Normalizer
) -> Input:
    try:
        identifiers = normalizer.identifiers(checkout.email, checkout.phoneNumber)
    except MissingIdentifiers as exc:
        raise _Rejected(Reason.NO_IDENTIFIERS, str(exc)) from None
    except IdentifierError as exc:
        raise _Rejected(Reason.INVALID_IDENTIFIER, str(exc)) from None
    order_id = None if checkout.orderId is None else str(checkout.orderId)
    if order_id is not None and not storable(order_id):
        raise _Rejected(Reason.INVALID_EVENT, "orderId holds a NUL or an unpaired surrogate character")
    return Input(
        identifiers,
        source=source,
        event_id=event_id,
        occurred_at=time,
        order_id=order_id,
        publish_unchanged=True,
    )


class _Factory:
    """Builds the v1 event after the checks the library's defaults would hide.

    The library invents an `id` and a `time` when they are absent; a made-up id would defeat
    idempotency, and an absent time must mean "when the database processes it" (`occurred_at=None`).
    """

    def __init__(self) -> None:
        self.time: datetime | None = None

    def __call__(self, attributes: dict[str, Any], data: dict[str, Any] | str | bytes | None) -> CloudEvent:
        if attributes.get("specversion") != "1.0":
            raise _Rejected(Reason.INVALID_EVENT, "specversion must be '1.0'")
        if attributes.get("type") != CHECKOUT_TYPE:
            raise _Rejected(Reason.INVALID_EVENT, f"type must be '{CHECKOUT_TYPE}'")
        for name in ("id", "source"):
            text = attributes.get(name)
            if not isinstance(text, str) or not text:
                raise _Rejected(Reason.INVALID_EVENT, f"{name} is required and must be a non-empty string")
            if len(text) > MAX_KEY_LENGTH or not storable(text):
                raise _Rejected(
                    Reason.INVALID_EVENT,
                    f"{name} must be at most {MAX_KEY_LENGTH} characters, without NUL or unpaired surrogates",
                )
        time = attributes.get("time")
        if isinstance(time, datetime):
            if time.tzinfo is None:
                attributes["time"] = time = time.replace(tzinfo=UTC)
            self.time = time
        return CloudEvent(attributes, data)


def header_dict(headers: Headers | None) -> dict[str, bytes]:
    """Header name -> bytes (the last value wins, as in the CloudEvents binding)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    return {name: value.encode() if isinstance(value, str) else value or b"" for name, value in pairs}


def _is_structured(content_type: bytes) -> bool:
    return content_type.split(b";", 1)[0].strip().lower() == STRUCTURED_CONTENT_TYPE.encode()
