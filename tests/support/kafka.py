"""Checkout events as records, and Kafka helpers: produce in order, read a topic, read the outputs."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka._types import HeadersType

from tests.support import SOURCE
from tests.support.polling import wait_until
from tests.support.topics import OUTPUT_PARTITIONS

Headers = list[tuple[str, bytes]]
STRUCTURED = [("content-type", b"application/cloudevents+json")]


@dataclass(frozen=True)
class Record:
    value: bytes | None
    key: bytes | None = None
    headers: Headers = field(default_factory=list)


def envelope(
    event_id: str,
    email: object = None,
    phone: object = None,
    *,
    time: datetime | None = None,
    order_id: object = None,
    source: str = SOURCE,
) -> dict[str, Any]:
    data: dict[str, Any] = {"email": email, "phoneNumber": phone}
    if order_id is not None:
        data["orderId"] = order_id
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": "checkout.completed",
        "datacontenttype": "application/json",
        "data": data,
    }
    if time is not None:
        event["time"] = time.isoformat()
    return event


def structured(event: dict[str, Any], key: str | None = None) -> Record:
    data = event.get("data") or {}
    key = key or data.get("email") or (None if data.get("phoneNumber") is None else str(data["phoneNumber"]))
    return Record(json.dumps(event).encode(), key.encode() if key else None, list(STRUCTURED))


def binary(event: dict[str, Any], key: str | None = None) -> Record:
    headers = [(f"ce_{k}", str(v).encode()) for k, v in event.items() if k not in ("data", "datacontenttype")]
    headers.append(("content-type", b"application/json"))
    return Record(json.dumps(event["data"]).encode(), key.encode() if key else None, headers)


def produce(
    bootstrap: str, topic: str, records: Sequence[Record], *, timeout: float = 30, **config: object
) -> None:
    """Produce in order and wait (up to `timeout` s) until every record is acknowledged."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, **config}
    )
    failures: list[KafkaError] = []

    def report(error: KafkaError | None, _: Message) -> None:
        if error is not None:
            failures.append(error)

    for r in records:
        headers: list[tuple[str, str | bytes | None]] = list(r.headers)
        producer.produce(topic, r.value, r.key, headers=headers, on_delivery=report)
        producer.poll(0)
    assert producer.flush(timeout) == 0, f"records still queued after {timeout} s"
    assert not failures, failures


def read_topic(
    bootstrap: str, topic: str, count: int, timeout: float = 60.0, *, exact: bool = False
) -> list[Message]:
    """The first `count` records of `topic` (all partitions), waiting for them up to `timeout`;
    `exact`: and no more (one more short read comes back empty)."""
    # assign(), not subscribe(): a group join would cost seconds on Tansu.
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}", "enable.auto.commit": False}
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            messages.extend(m for m in consumer.consume(count - len(messages), 0.5) if m.error() is None)
        assert len(messages) == count, f"read {len(messages)} of {count} records from {topic}"
        if exact:
            assert not consumer.consume(1, 0.5), f"more than {count} records in {topic}"
    finally:
        consumer.close()
    return messages


@dataclass(frozen=True)
class Received:
    """A record as a producer test checks it: key and headers decoded, the value as sent."""

    key: str | None
    headers: dict[str, bytes]
    value: bytes

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.value)
        return event


def consume(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Received]:
    """Exactly `count` records of `topic`, from the beginning."""
    return [
        Received(
            None if (key := m.key()) is None else key.decode(),
            {k: v for k, v in _pairs(m.headers()) if isinstance(v, bytes)},
            m.value() or b"",
        )
        for m in read_topic(bootstrap, topic, count, timeout, exact=True)
    ]


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


@dataclass(frozen=True)
class Output:
    """One record as read back: decoded key and headers, the value parsed as JSON."""

    topic: str
    partition: int
    key: str | None
    value: dict[str, Any]
    headers: dict[str, bytes]

    @property
    def id(self) -> str:
        return str(self.value["id"])

    @classmethod
    def of(cls, message: Message) -> Output:
        topic, partition, key, value = message.topic(), message.partition(), message.key(), message.value()
        assert topic is not None
        assert partition is not None
        assert value is not None
        return cls(
            topic,
            partition,
            key.decode() if isinstance(key, bytes) else key,
            orjson.loads(value),
            {k: v for k, v in _pairs(message.headers()) if isinstance(v, bytes)},
        )


def _pairs(headers: HeadersType | None) -> Iterable[tuple[str, str | bytes | None]]:
    return headers.items() if isinstance(headers, dict) else headers or []


class OutputReader:
    """Reads the output topics from the beginning, by partition assignment (no group join to wait for)."""

    def __init__(self, bootstrap: str, topics: Iterable[str], partitions: int = OUTPUT_PARTITIONS) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"test-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        self.consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(partitions)]
        )
        self.messages: list[Output] = []

    def read_until(self, condition: Callable[[list[Output]], bool], timeout: float = 30.0) -> list[Output]:
        def more() -> bool:
            for message in self.consumer.consume(1000, 0.2):
                assert message.error() is None, message.error()
                self.messages.append(Output.of(message))
            return condition(self.messages)

        wait_until(more, timeout, "output events")
        return self.messages

    def close(self) -> None:
        self.consumer.close()
