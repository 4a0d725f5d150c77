"""`CheckoutProducer`: emit `checkout.completed` CloudEvents the way the worker expects them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

from cloudevents.core.bindings.kafka import KafkaMessage
from confluent_kafka import KafkaError, Message

from consumer import kafka
from consumer.config import Settings, get_settings
from consumer.contract import checkout_message
from consumer.normalize import Normalizer
from producer_tools.records import CheckoutRecord

DEFAULT_SOURCE = "urn:checkout-events"


class DeliveryError(RuntimeError):
    """Some messages were not acknowledged by the broker."""


class CheckoutProducer:
    """An idempotent (acks=all) producer of checkout events, keyed by the shared normalizer's partition key.

    Use it as a context manager, or call `flush()` yourself: `send` only queues the message.
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        topic: str | None = None,
        *,
        source: str = DEFAULT_SOURCE,
        settings: Settings | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        settings = settings or get_settings()
        self.topic = topic or settings.checkout_topic
        self.source = source
        self.normalizer = Normalizer.from_settings(settings)
        self.delivered = 0
        self.failed = 0
        self.errors: list[str] = []
        self._producer = kafka.IdempotentProducer(
            bootstrap_servers or settings.kafka_bootstrap_servers, client_id="checkout-events", config=config
        )

    def send(
        self,
        email: str | None = None,
        phone: str | int | None = None,
        *,
        event_id: str | None = None,
        order_id: str | int | None = None,
        time: datetime | None = None,
        source: str | None = None,
    ) -> str:
        """Queue one event and return its id; raises `IdentifierError` if neither value is usable.

        `time` (default: now) must be timezone-aware; it is sent in UTC.
        """
        event_id = event_id or str(uuid.uuid4())
        message = self.message(email, phone, event_id=event_id, order_id=order_id, time=time, source=source)
        self.send_raw(message.value, message.key, headers=message.headers)
        return event_id

    def message(
        self,
        email: str | None,
        phone: str | int | None,
        *,
        event_id: str,
        order_id: str | int | None = None,
        time: datetime | None = None,
        source: str | None = None,
    ) -> KafkaMessage:
        """The Kafka message `send` would queue: structured-mode CloudEvent, key, content-type header."""
        return checkout_message(
            self.normalizer,
            email,
            phone,
            event_id=event_id,
            source=source or self.source,
            order_id=order_id,
            time=time,
        )

    def send_record(self, record: CheckoutRecord, *, source: str | None = None) -> str:
        return self.send(
            record.email,
            record.phone,
            event_id=record.event_id,
            order_id=record.order_id,
            time=record.time,
            source=source,
        )

    def send_raw(
        self,
        value: bytes,
        key: str | bytes | None = None,
        headers: Mapping[str, str | bytes] | None = None,
        *,
        topic: str | None = None,
    ) -> None:
        """Queue arbitrary bytes (malformed events for tests, DLQ replay) on the checkout topic or `topic`."""
        self._producer.produce(
            topic or self.topic, value, key, headers=headers, on_delivery=self._on_delivery
        )
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every queued message's delivery report; raises `DeliveryError` if any failed."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeliveryError(f"{remaining} message(s) still undelivered after {timeout:g}s")
        if self.failed:
            raise DeliveryError(f"{self.failed} message(s) failed: {'; '.join(self.errors[:3])}")

    def __enter__(self) -> CheckoutProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.flush()

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            if len(self.errors) < 10:
                self.errors.append(str(err))
