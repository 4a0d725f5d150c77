"""consumer/kafka.py: what is transient, and the idempotent producer's recovery from a fatal error."""

from __future__ import annotations

import psycopg
from confluent_kafka import KafkaError, KafkaException

from consumer import kafka


def test_transient_covers_the_database_the_broker_and_unacknowledged_deliveries() -> None:
    assert kafka.is_transient(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert kafka.is_transient(KafkaException(KafkaError(KafkaError._TRANSPORT)))
    assert kafka.is_transient(kafka.DeliveryFailed("2 dead letter(s) not delivered"))
    assert not kafka.is_transient(psycopg.errors.ProgramLimitExceeded())
    assert not kafka.is_transient(ValueError("a bug"))


def test_a_fatal_error_replaces_the_client_once() -> None:
    producer = kafka.IdempotentProducer("127.0.0.1:1", client_id="test", config={"log_level": 0})
    first = producer._producer
    assert not producer.recover()

    producer._on_error(KafkaError(KafkaError._FATAL, "producer fenced", fatal=True))
    assert producer.recover()
    assert producer._producer is not first
    assert not producer.recover()

    producer.fail_fatally(KafkaError(KafkaError._MSG_TIMED_OUT, "not fatal"))
    assert not producer.recover()
    producer.fail_fatally(KafkaError(KafkaError._FATAL, "fatal in a delivery report", fatal=True))
    assert producer.recover()
