"""The dead-letter producer: the original record, untouched, plus headers saying what was wrong.

The worker stores a record's offset only after its dead letter is acknowledged by the broker (acks=all,
idempotent producer). A delivery that fails or times out is retried by the worker's backoff; records
whose earlier attempt is still in flight are awaited, not produced twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from confluent_kafka import KafkaError, KafkaException, Message

from consumer import kafka
from consumer.config import Settings
from consumer.worker import metrics
from consumer.worker.decode import DeadLetter, header_dict

log = structlog.get_logger(__name__)

ERROR_HEADERS = ("error.reason", "error.message", "original.topic", "original.partition", "original.offset")


class DeliveryFailed(kafka.DeliveryFailed):
    """Some dead letters were not acknowledged; the caller retries `deliver` with backoff."""


@dataclass(eq=False)
class DeadLetterRecord:
    message: Message
    dead_letter: DeadLetter
    delivered: bool = False
    in_flight: bool = False
    error: KafkaError | None = field(default=None, repr=False)

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        """The original headers (a replayed dead letter's old error headers dropped) and the error's."""
        m = self.message
        kept = [(k, v) for k, v in header_dict(m.headers()).items() if k not in ERROR_HEADERS]
        return [
            *kept,
            ("error.reason", self.dead_letter.reason.value.encode()),
            ("error.message", self.dead_letter.message.encode()),
            ("original.topic", (m.topic() or "").encode()),
            ("original.partition", str(m.partition()).encode()),
            ("original.offset", str(m.offset()).encode()),
        ]

    def on_delivery(self, error: KafkaError | None, _: Message) -> None:
        self.in_flight = False
        self.error = error
        self.delivered = error is None
        if error is None:
            metrics.DEAD_LETTERS.labels(self.dead_letter.reason.value).inc()


class DeadLetterProducer:
    def __init__(self, settings: Settings) -> None:
        self._topic = settings.dlq_topic
        self._timeout = settings.worker_dlq_timeout_s
        # A report must arrive within one attempt, so a retry never races a still-queued copy.
        self._producer = kafka.IdempotentProducer(
            settings.kafka_bootstrap_servers, client_id="identity-dlq", delivery_timeout_s=self._timeout
        )

    def deliver(self, records: Sequence[DeadLetterRecord]) -> None:
        """Produce what is not delivered yet and wait for the reports; raises `DeliveryFailed`."""
        if not records:
            return
        if self._producer.recover():
            # The failed client's queue is gone with it: nothing is in flight any more.
            for r in records:
                r.in_flight = False
        try:
            for record in records:
                if not record.delivered and not record.in_flight:
                    self._produce(record)
        except KafkaException as exc:
            raise DeliveryFailed(f"could not enqueue a dead letter: {type(exc).__name__}") from exc
        finally:
            self._producer.flush(self._timeout)
        failed = [r for r in records if not r.delivered]
        if failed:
            errors = sorted({r.error.name() if r.error else "timeout" for r in failed})
            raise DeliveryFailed(f"{len(failed)} dead letter(s) not delivered: {', '.join(errors)}")
        for r in records:
            log.warning(
                "dead-lettered",
                reason=r.dead_letter.reason.value,
                error=r.dead_letter.message,
                topic=r.message.topic(),
                partition=r.message.partition(),
                offset=r.message.offset(),
            )

    def close(self) -> None:
        self._producer.flush(self._timeout)

    def _produce(self, record: DeadLetterRecord) -> None:
        m = record.message
        self._producer.produce(
            self._topic, m.value(), m.key(), headers=record.headers(), on_delivery=record.on_delivery
        )
        record.in_flight = True
