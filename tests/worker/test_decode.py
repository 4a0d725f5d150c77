"""Decoding Kafka records into reconciliation requests or dead letters (no broker, no database)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cloudevents.core.bindings.kafka import to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.core import Input
from consumer.normalize import Identifiers, Normalizer
from consumer.worker.decode import MAX_KEY_LENGTH, DeadLetter, Reason, decode
from tests.support.kafka import STRUCTURED, binary, envelope, structured

NORMALIZER = Normalizer()
WHEN = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
EMAIL = "Lorraine@HillValley.example"
PHONE = "+1 (555) 010-0123"


def decoded(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> Input | DeadLetter:
    return decode(value, headers, NORMALIZER)


def request(record_value: bytes, headers: list[tuple[str, bytes]]) -> Input:
    result = decoded(record_value, headers)
    assert isinstance(result, Input), result
    return result


def test_structured_event_becomes_a_normalized_request() -> None:
    r = structured(envelope("ev-1", f"  {EMAIL} ", PHONE, time=WHEN, order_id=1234))
    assert request(r.value or b"", r.headers) == Input(
        Identifiers("lorraine@hillvalley.example", "+15550100123"),
        source="urn:test:checkout",
        event_id="ev-1",
        occurred_at=WHEN,
        order_id="1234",
        publish_unchanged=True,
    )


def test_structured_event_without_content_type_is_accepted() -> None:
    event = envelope("ev-1", EMAIL, time=WHEN)
    assert request(json.dumps(event).encode(), []).identifiers.email == EMAIL.lower()


def test_binary_event_becomes_the_same_request() -> None:
    event = envelope("ev-2", EMAIL, 5550100123, time=WHEN, order_id="A-7")
    b, s = binary(event), structured(event)
    assert request(b.value or b"", b.headers) == request(s.value or b"", s.headers)


def test_events_written_by_the_cloudevents_library_in_both_modes() -> None:
    event = CloudEvent(
        {"id": "lib-1", "source": "/shop", "type": "checkout.completed", "time": WHEN},
        {"email": EMAIL, "phoneNumber": "555 0100"},
    )
    for message in (to_structured_event(event), to_binary_event(event)):
        r = request(message.value, list(message.headers.items()))
        assert (r.source, r.event_id, r.occurred_at) == ("/shop", "lib-1", WHEN)
        assert r.identifiers == Identifiers(EMAIL.lower(), "5550100")


def test_absent_time_means_processing_time_and_naive_time_means_utc() -> None:
    r = structured(envelope("ev-3", EMAIL))
    assert request(r.value or b"", r.headers).occurred_at is None
    naive = envelope("ev-4", EMAIL) | {"time": "2024-05-01T12:30:00"}
    assert request(json.dumps(naive).encode(), STRUCTURED).occurred_at == WHEN
    offset = envelope("ev-5", EMAIL) | {"time": "2024-05-01T14:30:00+02:00"}
    occurred = request(json.dumps(offset).encode(), STRUCTURED).occurred_at
    assert occurred == WHEN
    assert occurred.utcoffset() == timedelta(hours=2)
    headers = [*binary(envelope("ev-6", EMAIL)).headers, ("ce_time", b"2024-05-01T12:30:00")]
    assert request(json.dumps({"email": EMAIL}).encode(), headers).occurred_at == WHEN


def _without(event: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != name}


GOOD = envelope("ev-9", EMAIL, PHONE, time=WHEN)
BAD_STRUCTURED: list[tuple[str, Any, Reason]] = [
    ("not JSON", b"{not json", Reason.UNDECODABLE),
    ("not UTF-8", b"\xff\xfe\x00garbage", Reason.UNDECODABLE),
    ("JSON array", [GOOD], Reason.INVALID_EVENT),
    ("JSON null", None, Reason.INVALID_EVENT),
    ("no specversion", _without(GOOD, "specversion"), Reason.INVALID_EVENT),
    ("specversion 0.3", GOOD | {"specversion": "0.3"}, Reason.INVALID_EVENT),
    ("no id", _without(GOOD, "id"), Reason.INVALID_EVENT),
    ("empty id", GOOD | {"id": ""}, Reason.INVALID_EVENT),
    ("numeric id", GOOD | {"id": 7}, Reason.INVALID_EVENT),
    ("id too long", GOOD | {"id": "x" * (MAX_KEY_LENGTH + 1)}, Reason.INVALID_EVENT),
    ("NUL in source", GOOD | {"source": "a\x00b"}, Reason.INVALID_EVENT),
    ("no source", _without(GOOD, "source"), Reason.INVALID_EVENT),
    ("wrong type", GOOD | {"type": "checkout.cancelled"}, Reason.INVALID_EVENT),
    ("no type", _without(GOOD, "type"), Reason.INVALID_EVENT),
    ("time not a timestamp", GOOD | {"time": "yesterday"}, Reason.INVALID_EVENT),
    ("time a number", GOOD | {"time": 1714566600}, Reason.INVALID_EVENT),
    ("bad extension name", GOOD | {"Shop-Id": "x"}, Reason.INVALID_EVENT),
    ("no data", _without(GOOD, "data"), Reason.INVALID_EVENT),
    ("data a string", GOOD | {"data": "lorraine@hillvalley.example"}, Reason.INVALID_EVENT),
    ("orderId an object", GOOD | {"data": {"email": EMAIL, "orderId": {"n": 1}}}, Reason.INVALID_EVENT),
    ("orderId a boolean", GOOD | {"data": {"email": EMAIL, "orderId": True}}, Reason.INVALID_EVENT),
    ("phone a boolean", GOOD | {"data": {"phoneNumber": True}}, Reason.INVALID_IDENTIFIER),
    ("phone a fraction", GOOD | {"data": {"phoneNumber": 5550100.5}}, Reason.INVALID_IDENTIFIER),
    ("phone with letters", GOOD | {"data": {"phoneNumber": "555-CALL-NOW"}}, Reason.INVALID_IDENTIFIER),
    ("email a number", GOOD | {"data": {"email": 12345678}}, Reason.INVALID_IDENTIFIER),
    ("NUL in email", GOOD | {"data": {"email": "a\x00@b.example"}}, Reason.INVALID_IDENTIFIER),
    ("empty data", GOOD | {"data": {}}, Reason.NO_IDENTIFIERS),
    ("blank values", GOOD | {"data": {"email": "  ", "phoneNumber": ""}}, Reason.NO_IDENTIFIERS),
    ("null values", GOOD | {"data": {"email": None, "phoneNumber": None}}, Reason.NO_IDENTIFIERS),
]


@pytest.mark.parametrize(
    ("value", "reason"), [(v, r) for _, v, r in BAD_STRUCTURED], ids=[n for n, _, _ in BAD_STRUCTURED]
)
def test_every_bad_structured_event_is_a_dead_letter_without_personal_data(
    value: Any, reason: Reason
) -> None:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    result = decoded(raw, STRUCTURED)
    assert isinstance(result, DeadLetter)
    assert result.reason is reason, result.message
    for secret in ("lorraine", "hillvalley", "555", "0100", "CALL"):
        assert secret not in result.message.lower()


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (None, [], Reason.UNDECODABLE),
        (b"", STRUCTURED, Reason.UNDECODABLE),
        (b"\x00\x01\x02", binary(GOOD).headers, Reason.UNDECODABLE),
        (b'{"email": "a@b.example"}', [("ce_id", b"x")], Reason.INVALID_EVENT),
        (b'{"email": "a@b.example"}', [*binary(GOOD).headers, ("ce_id", b"\xff")], Reason.UNDECODABLE),
        (b"[1, 2]", binary(GOOD).headers, Reason.INVALID_EVENT),
        (json.dumps(GOOD).encode(), [("content-type", b"application/json")], Reason.INVALID_EVENT),
    ],
    ids=[
        "tombstone",
        "empty",
        "binary garbage",
        "binary missing attributes",
        "binary bad header",
        "binary array",
        "structured with a JSON content type",
    ],
)
def test_bad_records(value: bytes | None, headers: list[tuple[str, bytes]], reason: Reason) -> None:
    result = decoded(value, headers)
    assert isinstance(result, DeadLetter)
    assert result.reason is reason, result.message


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(st.none(), st.binary(max_size=300)),
    headers=st.lists(
        st.tuples(
            st.sampled_from(
                ["content-type", "ce_id", "ce_source", "ce_type", "ce_specversion", "ce_time", "x"]
            ),
            st.one_of(st.none(), st.binary(max_size=40)),
        ),
        max_size=6,
    ),
)
def test_garbage_never_raises(value: bytes | None, headers: list[tuple[str, bytes | None]]) -> None:
    assert isinstance(decode(value, headers, NORMALIZER), Input | DeadLetter)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    mutations=st.dictionaries(
        st.sampled_from(
            ["specversion", "id", "source", "type", "time", "data", "datacontenttype", "subject"]
        ),
        json_values,
        max_size=4,
    ),
    data=st.dictionaries(st.sampled_from(["email", "phoneNumber", "orderId"]), json_values, max_size=3),
)
def test_mutated_envelopes_never_raise(mutations: dict[str, Any], data: dict[str, Any]) -> None:
    event = GOOD | {"data": data} | mutations
    assert isinstance(decode(json.dumps(event).encode(), STRUCTURED, NORMALIZER), Input | DeadLetter)


_attribute = st.one_of(st.none(), st.just(""), st.text(max_size=8), st.integers(), st.booleans())


def _mostly(valid: object, odd: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Usually the valid value, so that one odd attribute at a time decides the verdict."""
    return st.one_of(st.just(valid), st.just(valid), st.just(valid), odd)


@settings(max_examples=400, deadline=None)
@given(
    event_id=_mostly("ev-1", st.one_of(st.text(max_size=300), st.integers())),
    source=_mostly("/shop", st.one_of(st.text(max_size=20), st.none())),
    spec=_mostly("1.0", st.sampled_from(["0.3", 1.0])),
    kind=_mostly("checkout.completed", st.just("checkout.created")),
    time=st.one_of(
        st.none(),
        st.datetimes(timezones=st.one_of(st.none(), st.timezones())).map(datetime.isoformat),
        st.text(max_size=12),
        st.integers(),
    ),
    email=_mostly(
        "doc@hillvalley.edu", st.one_of(st.none(), st.emails(), st.text(max_size=12), st.integers())
    ),
    phone=st.one_of(st.none(), st.integers(), st.text(alphabet="0123456789 +-()x", max_size=14)),
    extra=st.dictionaries(
        st.sampled_from(["subject", "dataschema", "datacontenttype", "time", "Bad-Name"]),
        st.one_of(_attribute, st.just("application/json")),
        max_size=2,
    ),
)
def test_fast_path_and_general_path_agree(
    event_id: object,
    source: object,
    spec: object,
    kind: str,
    time: object,
    email: object,
    phone: object,
    extra: dict[str, object],
) -> None:
    """The structured fast path is an optimization only: it must never change a verdict."""
    event = {"specversion": spec, "id": event_id, "source": source, "type": kind}
    if time is not None:
        event["time"] = time
    event |= extra
    event["data"] = {"email": email, "phoneNumber": phone}
    value = json.dumps(event).encode()
    fast = decoded(value, STRUCTURED)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("consumer.worker.decode._structured_fast_path", lambda *_: None)
        general = decoded(value, STRUCTURED)
    assert fast == general


@pytest.mark.parametrize(
    ("attributes", "valid"),
    [
        ({"subject": ""}, False),
        ({"subject": None}, False),
        ({"datacontenttype": None}, False),
        ({"time": None}, False),
        ({"time": "2024-05-01T12:30:00+00:00:01"}, False),
        ({"time": "2024-05-01T24:00:00Z"}, True),
    ],
)
def test_fast_path_defers_odd_attributes_to_the_general_path(
    attributes: dict[str, object], valid: bool
) -> None:
    value = json.dumps(envelope("ev-7", EMAIL) | attributes).encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("consumer.worker.decode._structured_fast_path", lambda *_: None)
        general = decoded(value, STRUCTURED)
    assert isinstance(general, Input) == valid
    assert decoded(value, STRUCTURED) == general
