"""The consume loop: batches of checkout events -> one reconciliation transaction -> stored offsets.

Order of effects for every batch, so a crash at any point loses nothing and applies nothing twice:
1. decode each record (bad ones become dead letters);
2. `reconcile_batch` for the good ones: contacts, processed-event records and outbox rows commit together;
   a redelivered event is recognised there and changes nothing;
3. dead letters (including idempotency keys reused with another payload) are acknowledged by the broker;
4. the offsets are stored; librdkafka commits them (and we commit synchronously on revoke and shutdown).

Transient failures in 2 or 3 are retried with capped exponential backoff (tenacity). While waiting, the
assigned partitions are paused and the consumer keeps polling, so the group membership and the
position survive any outage and `max.poll.interval.ms` is never exceeded.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from consumer import db, kafka
from consumer.config import Settings
from consumer.core import BlockedInput, Guardrails, Input, KeyConflict, Resolution, Result, reconcile_batch
from consumer.normalize import Normalizer
from consumer.worker import metrics
from consumer.worker.decode import DeadLetter, Reason, decode
from consumer.worker.dlq import DeadLetterProducer, DeadLetterRecord

log = structlog.get_logger(__name__)

T = TypeVar("T")
Partition = tuple[str, int]

_LAG_INTERVAL_S = 1.0
_KEY_REUSED = DeadLetter(
    Reason.KEY_REUSED, "this (source, id) was already processed with a different payload; nothing applied"
)
_BLOCKED = DeadLetter(
    Reason.BLOCKED_IDENTIFIER,
    "every identifier of the event is blocked; nothing applied (replay it with dlq-replay after an unblock)",
)


@dataclass(eq=False)
class _Item:
    message: Message
    decoded: Input | DeadLetter

    @property
    def partition(self) -> Partition:
        return (self.message.topic() or "", self.message.partition() or 0)


class Worker:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._normalizer = Normalizer.from_settings(settings)
        self._guard = Guardrails.of(settings)
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": settings.kafka_group_id,
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": settings.kafka_session_timeout_ms,
                "heartbeat.interval.ms": settings.kafka_heartbeat_interval_ms,
                "max.poll.interval.ms": settings.kafka_max_poll_interval_ms,
                "auto.offset.reset": "earliest",
                # Offsets are stored by hand once a batch's effects are durable; librdkafka commits them.
                "enable.auto.offset.store": False,
                "enable.auto.commit": True,
                "error_cb": self._on_error,
                "logger": logging.getLogger("confluent_kafka.consumer"),
            }
        )
        self._dlq = DeadLetterProducer(settings)
        self._conn: psycopg.Connection[Any] | None = None
        self._stopping = False
        self._fatal: KafkaError | None = None
        self._paused = False
        # The batch whose effects are not durable yet; a revoke removes its partitions' records from it.
        self._inflight: list[_Item] = []
        # Records a poll returned while we were waiting out a failure; processed next, in order.
        self._held: list[Message] = []
        self._lag_updated = 0.0

    def stop(self) -> None:
        """Finish the current batch, commit and leave the group. Safe to call from a signal handler."""
        self._stopping = True

    def run(self) -> None:
        settings = self._settings
        self._consumer.subscribe(
            [settings.checkout_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("worker started", topic=settings.checkout_topic, group=settings.kafka_group_id)
        try:
            while not self._stopping:
                metrics.HEARTBEAT.set_to_current_time()
                messages = self._held or self._consumer.consume(
                    num_messages=settings.worker_batch_size, timeout=settings.worker_batch_timeout_s
                )
                self._held = []
                self._process([m for m in messages if not self._is_error(m)])
                self._update_lag()
        finally:
            self._close()
        log.info("worker stopped")

    # --- one batch ----------------------------------------------------------------------------------

    def _process(self, messages: list[Message]) -> None:
        if not messages:
            return
        started = time.perf_counter()
        self._inflight = [_Item(m, decode(m.value(), m.headers(), self._normalizer)) for m in messages]
        try:
            results = self._retry("database", self._reconcile)
            records = [
                (item, DeadLetterRecord(item.message, outcome))
                for item, outcome in results
                if isinstance(outcome, DeadLetter)
            ]
            self._retry("dlq", lambda: self._dlq.deliver(self._still_inflight(records)))
        except Exception as exc:
            if not (self._stopping and kafka.is_transient(exc)):
                raise
            log.warning("shutting down during an outage; the batch will be redelivered", count=len(messages))
            self._inflight = []
            return
        finished = self._store_offsets()
        outcomes = collections.Counter(_outcome_label(o) for item, o in results if item in finished)
        for label, count in outcomes.items():
            metrics.OUTCOMES.labels(label).inc(count)
        metrics.EVENTS_PROCESSED.inc(len(finished))
        metrics.BATCH_SIZE.observe(len(messages))
        metrics.BATCH_DURATION.observe(time.perf_counter() - started)
        log.debug("batch done", count=len(messages), finished=len(finished))

    def _reconcile(self) -> list[tuple[_Item, Resolution | DeadLetter]]:
        """The batch's records with their result: a resolution, or a dead letter."""
        items = list(self._inflight)
        good = [item for item in items if isinstance(item.decoded, Input)]
        requests = [item.decoded for item in good if isinstance(item.decoded, Input)]
        results: dict[_Item, Result] = {}
        if requests:
            conn = self._connection()
            try:
                results = dict(zip(good, reconcile_batch(conn, requests, self._guard), strict=True))
            except Exception as exc:
                if kafka.is_transient(exc):
                    self._drop_connection()
                raise
        return [(item, _result(item, results.get(item))) for item in items]

    def _store_offsets(self) -> set[_Item]:
        """Store the next offset of every partition still held; returns the records that counted."""
        finished = set(self._inflight)
        next_offsets: dict[Partition, int] = {}
        for item in self._inflight:
            offset = item.message.offset() or 0
            next_offsets[item.partition] = max(next_offsets.get(item.partition, 0), offset + 1)
        self._inflight = []
        if next_offsets:
            try:
                self._consumer.store_offsets(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
                )
            except KafkaException as exc:
                # Partitions taken away under us: their new owner re-reads them, the core dedupes.
                log.warning("could not store offsets", error=str(exc.args[0]))
        return finished

    def _still_inflight(self, records: list[tuple[_Item, DeadLetterRecord]]) -> list[DeadLetterRecord]:
        inflight = set(self._inflight)
        return [record for item, record in records if item in inflight]

    # --- transient failures -------------------------------------------------------------------------

    def _retry(self, operation: str, attempt: Callable[[], T]) -> T:
        settings = self._settings
        retrying = Retrying(
            retry=retry_if_exception(kafka.is_transient),
            wait=wait_exponential_jitter(
                initial=settings.worker_retry_initial_s,
                max=settings.worker_retry_max_s,
                jitter=settings.worker_retry_initial_s,
            ),
            stop=lambda _: self._stopping,
            sleep=self._idle,
            before_sleep=lambda state: self._before_retry(operation, state),
            reraise=True,
        )
        try:
            return retrying(attempt)
        finally:
            if self._paused:
                self._consumer.resume(self._consumer.assignment())
                self._paused = False
                log.info("partitions resumed", operation=operation)

    def _before_retry(self, operation: str, state: RetryCallState) -> None:
        metrics.RETRIES.labels(operation).inc()
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "transient failure; retrying",
            operation=operation,
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 2),
            error=type(exc).__name__,
            detail=str(exc).splitlines()[0] if exc and str(exc) else None,
        )

    def _idle(self, seconds: float) -> None:
        """Wait out a backoff while still polling: heartbeats, rebalances and max.poll.interval.ms go on."""
        if not self._paused:
            self._consumer.pause(self._consumer.assignment())
            self._paused = True
        deadline = time.monotonic() + seconds
        while not self._stopping and (left := deadline - time.monotonic()) > 0:
            metrics.HEARTBEAT.set_to_current_time()
            polled = self._consumer.consume(
                num_messages=self._settings.worker_batch_size, timeout=min(left, 0.5)
            )
            self._held.extend(m for m in polled if not self._is_error(m))

    # --- database -----------------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self._settings, "identity-worker")
        return self._conn

    def _drop_connection(self) -> None:
        """A connection that failed may be broken in ways psycopg cannot see: always start afresh."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- rebalances ---------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels("assigned").inc(len(partitions))
        log.info("partitions assigned", partitions=_names(partitions))
        if self._paused:
            # Waiting out a failure: new partitions start paused too, so nothing arrives out of turn.
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels("revoked").inc(len(partitions))
        self._abandon(partitions)
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit on revoke failed", error=exc.args[0].name())
        log.info("partitions revoked", partitions=_names(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels("lost").inc(len(partitions))
        self._abandon(partitions)
        log.warning("partitions lost", partitions=_names(partitions))

    def _abandon(self, partitions: list[TopicPartition]) -> None:
        """Forget unfinished records of partitions we no longer own; their new owner reads them again."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        dropped = [item for item in self._inflight if item.partition in gone]
        if dropped:
            self._inflight = [item for item in self._inflight if item.partition not in gone]
            log.info("in-flight records abandoned", count=len(dropped))
        self._held = [m for m in self._held if (m.topic(), m.partition()) not in gone]
        for topic, partition in gone:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(topic, str(partition))

    # --- errors, lag, shutdown ----------------------------------------------------------------------

    def _is_error(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return False
        if error.fatal():
            raise KafkaException(error)
        log.warning("consumer error", error=error.name(), detail=error.str())
        return True

    def _on_error(self, error: KafkaError) -> None:
        # librdkafka reconnects by itself; only a fatal error ends the worker.
        if error.fatal():
            self._fatal = error
            self._stopping = True
        kafka.log_client_error("identity-worker", error)

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_updated < _LAG_INTERVAL_S:
            return
        self._lag_updated = now
        for tp in self._consumer.position(self._consumer.assignment()):
            try:
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue  # nothing fetched from this partition yet; a metric must not stop the worker
            if high >= 0 and tp.offset >= 0:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(high - tp.offset, 0))

    def _close(self) -> None:
        try:
            # Leaving the group revokes every partition; `_on_revoke` commits the stored offsets.
            self._consumer.close()
            self._dlq.close()
        finally:
            self._drop_connection()
        if self._fatal is not None:
            raise KafkaException(self._fatal)


def _result(item: _Item, result: Result | None) -> Resolution | DeadLetter:
    if isinstance(item.decoded, DeadLetter):
        return item.decoded
    if isinstance(result, KeyConflict):
        return _KEY_REUSED
    if isinstance(result, BlockedInput):
        return _BLOCKED
    assert result is not None
    return result


def _outcome_label(outcome: Resolution | DeadLetter) -> str:
    if isinstance(outcome, DeadLetter):
        return "dead_lettered"
    return "duplicate" if outcome.duplicate else outcome.outcome


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]
