from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumer.config import Settings
from consumer.core import Input
from consumer.normalize import MissingIdentifiers
from consumer.worker.decode import decode
from producer_tools import CheckoutProducer, synthetic_records
from producer_tools.cli import main
from tests.support.kafka import consume

TIME = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def test_send_builds_a_structured_cloudevent_keyed_by_the_normalized_email(
    kafka_bootstrap: str, topic: str, settings: Settings
) -> None:
    with CheckoutProducer(settings=settings, source="urn:shop") as producer:
        event_id = producer.send(" Ada@Example.COM ", "+1 (555) 0100", order_id=7, time=TIME)
        phone_only = producer.send(phone="+1 555-0100", event_id="given-id")

    by_id = {r.event["id"]: r for r in consume(kafka_bootstrap, topic, 2)}
    first, second = by_id[event_id], by_id["given-id"]
    assert first.key == "ada@example.com"
    assert first.headers["content-type"] == b"application/cloudevents+json"
    assert first.event == {
        "specversion": "1.0",
        "id": event_id,
        "source": "urn:shop",
        "type": "checkout.completed",
        "time": "2026-03-01T12:30:00Z",
        "datacontenttype": "application/json",
        # Raw values travel as given; only the key is normalized.
        "data": {"email": " Ada@Example.COM ", "phoneNumber": "+1 (555) 0100", "orderId": 7},
    }
    assert phone_only == "given-id"
    assert second.key == "+15550100"
    assert second.event["data"] == {"email": None, "phoneNumber": "+1 555-0100", "orderId": None}
    assert datetime.fromisoformat(second.event["time"]).tzinfo is not None


def test_send_refuses_an_event_without_identifiers(
    kafka_bootstrap: str, topic: str, settings: Settings
) -> None:
    with CheckoutProducer(settings=settings) as producer:
        with pytest.raises(MissingIdentifiers):
            producer.send("  ", "")
        producer.send("x@example.com")
    assert [r.key for r in consume(kafka_bootstrap, topic, 1)] == ["x@example.com"]


def test_send_raw_passes_bytes_key_and_headers_verbatim(
    kafka_bootstrap: str, topic: str, settings: Settings
) -> None:
    with CheckoutProducer(settings=settings) as producer:
        producer.send_raw(b"\xff not json", b"k", headers={"error.reason": b"replayed"})
    (received,) = consume(kafka_bootstrap, topic, 1)
    assert (received.key, received.value, received.headers) == (
        "k",
        b"\xff not json",
        {"error.reason": b"replayed"},
    )


def test_cli_send_prints_the_event_id(
    kafka_bootstrap: str, topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "send",
            "--bootstrap-servers",
            kafka_bootstrap,
            "--topic",
            topic,
            "--phone",
            "(555) 0199",
            "--order-id",
            "o-9",
            "--time",
            "2026-03-01T10:00:00+02:00",
        ]
    )
    assert code == 0
    event_id = capsys.readouterr().out.strip()
    (received,) = consume(kafka_bootstrap, topic, 1)
    assert received.key == "5550199"
    assert received.event["id"] == event_id
    assert received.event["time"] == "2026-03-01T08:00:00Z"
    assert received.event["data"] == {"email": None, "phoneNumber": "(555) 0199", "orderId": "o-9"}


def test_cli_send_without_identifiers_is_a_usage_error(
    kafka_bootstrap: str, topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["send", "--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--email", " "])
    assert exit_info.value.code == 2
    assert "at least one of 'email' or 'phoneNumber'" in capsys.readouterr().err


def test_the_worker_decodes_every_producer_event_to_the_same_key() -> None:
    """Producer and worker share one normalizer: the key the producer picks is what the worker matches."""
    producer = CheckoutProducer("127.0.0.1:1", settings=Settings(), config={"log_level": 0})
    normalizer = producer.normalizer
    for record in synthetic_records(100, 2000, seed=4):
        assert record.event_id is not None
        message = producer.message(
            record.email, record.phone, event_id=record.event_id, order_id=record.order_id, time=record.time
        )
        request = decode(message.value, message.headers, normalizer)
        assert isinstance(request, Input), request
        assert request.identifiers.partition_key == message.key
        assert (request.source, request.event_id) == (producer.source, record.event_id)
        assert request.occurred_at == record.time
