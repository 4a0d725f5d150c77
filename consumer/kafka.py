"""Kafka client setup, written once: the idempotent producer, its recovery, and what counts as transient.

Every process that writes to Kafka (the relay, the worker's dead-letter producer, dead-letter replay, the
producer tools) goes through `IdempotentProducer`; every Kafka client logs its client errors with
`log_client_error`, so the fields are the same whichever process logged them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from consumer import db

log = structlog.get_logger(__name__)

Headers = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None]
DeliveryCallback = Callable[[KafkaError | None, Any], None]


class DeliveryFailed(Exception):
    """Some messages were not acknowledged by the broker; retrying them (with backoff) is safe."""


def log_client_error(client: str, error: KafkaError) -> None:
    """librdkafka's `error_cb`: it reconnects by itself, so most of these are passing (the broker away)."""
    log.warning(
        "kafka client error", client=client, error=error.name(), detail=error.str(), fatal=error.fatal()
    )


def is_transient(exc: BaseException) -> bool:
    """The one rule for "retry with backoff, it goes away by itself": the database cannot serve now,
    the broker is unreachable, or a delivery was not acknowledged. A fatal Kafka error is not transient
    for the client that raised it, but `IdempotentProducer` replaces such a client, so a retry is."""
    return db.unavailable(exc) or isinstance(exc, KafkaException | DeliveryFailed)


class IdempotentProducer:
    """A confluent-kafka producer with idempotence (acks=all: per-partition order, no duplicates from
    the client's own retries), replaced by a new one after a fatal error.

    A fatal idempotent-producer error (a restarted broker that forgot our producer id, say) poisons the
    client for good; the next `produce` after one starts a fresh client. Messages still queued in the
    old one were not acknowledged: their delivery callbacks never ran, so callers resend them.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str,
        delivery_timeout_s: float | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.client_id = client_id
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "error_cb": self._on_error,
            "logger": logging.getLogger(f"confluent_kafka.{client_id}"),
            **(config or {}),
        }
        if delivery_timeout_s is not None:
            self._config["message.timeout.ms"] = int(delivery_timeout_s * 1000)
        self._fatal = False
        self._producer = Producer(self._config)

    def recover(self) -> bool:
        """Replace the client if it failed fatally; True if it did (what it had queued is lost)."""
        if not self._fatal:
            return False
        log.error("kafka producer failed fatally; replacing it", client=self.client_id)
        self._producer.purge()
        self._producer.flush(0)
        self._fatal = False
        self._producer = Producer(self._config)
        return True

    def produce(
        self,
        topic: str,
        value: str | bytes | None,
        key: str | bytes | None = None,
        *,
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Queue one message; while the local queue is full, serve delivery reports to make room."""
        self.recover()
        pairs = list(headers.items() if isinstance(headers, Mapping) else headers or [])
        while True:
            try:
                self._producer.produce(topic, value, key, headers=pairs, on_delivery=on_delivery)
                return
            except BufferError:
                self._producer.poll(0.1)

    def poll(self, timeout: float = 0) -> int:
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float) -> int:
        """Wait up to `timeout` s for every delivery report; returns how many messages are still queued."""
        return int(self._producer.flush(timeout))

    def fail_fatally(self, error: KafkaError) -> None:
        """Record a fatal error seen outside `error_cb` (in a delivery report): replace the client."""
        if error.fatal():
            self._fatal = True

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = True
        log_client_error(self.client_id, error)


class GroupLag:
    """How far a consumer group (the workers') is behind on a topic: its committed offsets against the
    partitions' high watermarks. It never joins the group, so the members are not disturbed.

    The high watermarks come with fetch responses: this client reads the topic (and drops what it
    reads) rather than asking with ListOffsets, which the embedded broker answers wrongly.
    """

    def __init__(self, bootstrap_servers: str, topic: str, group: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": group,
                "enable.auto.commit": False,
                "queued.max.messages.kbytes": 1024,
                "fetch.wait.max.ms": 100,
            }
        )
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
        start = self._consumer.committed(self._partitions, timeout=10)
        self._consumer.assign(
            [
                TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                for tp in start
            ]
        )

    def lag(self, timeout: float = 5.0) -> int:
        """Records not processed yet (all of a partition the group never committed on)."""
        committed = self._consumer.committed(self._partitions, timeout=10)
        deadline = time.monotonic() + timeout
        while True:
            # Longer than fetch.wait.max.ms: a fetch response, with fresh watermarks, arrives meanwhile.
            self._consumer.consume(10_000, 0.25)
            marks = [self._consumer.get_watermark_offsets(tp, cached=True) for tp in self._partitions]
            if all(high >= 0 for _, high in marks) or time.monotonic() > deadline:
                break
        return sum(
            max(0, high - max(tp.offset, low, 0)) for tp, (low, high) in zip(committed, marks, strict=True)
        )

    def started(self) -> bool:
        """Whether the group has committed anything on the topic (a worker is consuming it)."""
        return any(tp.offset >= 0 for tp in self._consumer.committed(self._partitions, timeout=10))

    def close(self) -> None:
        self._consumer.close()
