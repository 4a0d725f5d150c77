from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from consumer.config import Settings
from consumer.local.embedded import create_topics


@dataclass(frozen=True)
class Received:
    key: str | None
    headers: dict[str, bytes]
    value: bytes

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.value)
        return event


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Callable[[], str]:
    """Make a fresh topic (3 partitions): tests share one broker, so each works on its own topics."""

    def make() -> str:
        name = f"test.producer-tools.{uuid.uuid4().hex[:12]}"
        create_topics(kafka_bootstrap, {name: 3})
        return name

    return make


@pytest.fixture
def topic(new_topic: Callable[[], str]) -> str:
    return new_topic()


@pytest.fixture
def settings(kafka_bootstrap: str, topic: str) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, checkout_topic=topic)


def consume(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Received]:
    """Read `count` messages of `topic` from the beginning, failing after `timeout` seconds."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4()}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        received: list[Received] = []
        deadline = time.monotonic() + timeout
        while len(received) < count:
            assert time.monotonic() < deadline, f"got {len(received)} of {count} messages from {topic}"
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            key = msg.key()
            received.append(
                Received(
                    None if key is None else key.decode(),
                    dict(msg.headers() or []),  # type: ignore[arg-type]
                    msg.value() or b"",
                )
            )
        # Nothing beyond `count`: one more short poll must come back empty.
        extra = consumer.poll(0.5)
        assert extra is None or extra.error() is not None, "more messages than expected"
        return received
    finally:
        consumer.close()
