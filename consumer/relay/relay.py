"""`identity relay`: publish the transactional outbox to the output topics, in order, at least once.

A row holds one transaction's events, in order (sql/008). Nothing is skipped. Every row is marked
(`published_at`) once the delivery reports of all its events succeeded, and every round reads the
oldest unmarked rows visible to it. There is no high-water mark a late commit could fall behind: a
transaction that took a low outbox id but commits after higher ids were published is simply read by
the next round. Rows of a transaction still running are invisible until it commits.

Per-key order. The key is the primary contact id of the resulting cluster, and the core writes rows
for key P only while holding the row lock on primary P (it locks every primary an input touches before
deciding anything). Two transactions writing key P are therefore serialized: the second one takes its
outbox ids only after the first one committed. For one key, id order is commit order, and a snapshot
that sees a key's later rows also sees its earlier ones. The relay reads in id order and sends through
one idempotent producer (acks=all), which keeps order within a partition, and all events of a key go to
one partition. A failed delivery ends the round: only the rows before the one holding it are marked,
and the next round resends from the oldest unmarked row. Retries can duplicate events (same CloudEvent
id, so consumers de-duplicate), never drop them.

Why no `txid < pg_snapshot_xmin(pg_current_snapshot())` filter: a transaction id is assigned at the
first write or row lock, not at commit. A batch that locks primary 5, then waits for primary 7 held by
another transaction, has the smaller txid but writes key 7 after it. If an unrelated transaction with
a txid between the two is still open, that filter would publish the later rows of key 7 and hold back
the earlier ones; it would also stall every row behind any long transaction. Marking rows makes it
unnecessary.

Leadership. One relay publishes at a time: it holds a session advisory lock on a dedicated connection,
which also LISTENs for the outbox trigger's notifications (with polling as a fallback). Others are hot
standbys retrying the lock every poll interval; the lock is freed the moment the leader's session ends,
whether it exited, crashed or lost its connection.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from datetime import datetime
from typing import Any, LiteralString, NamedTuple

import psycopg
import structlog
from confluent_kafka import KafkaError, KafkaException
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_when_event_set,
    wait_exponential_jitter,
)

from consumer import db, kafka, queries
from consumer.config import Settings
from consumer.relay.metrics import BACKLOG, HEARTBEAT, LATENCY, LEADER, PUBLISHED

log = structlog.get_logger(__name__)

CONTENT_TYPE = ("content-type", b"application/cloudevents+json")
PRUNE_CHUNK = 5000


class PublishFailed(kafka.DeliveryFailed):
    """A delivery failed: the round stopped there and is retried from the oldest unpublished row."""

    def __init__(self, message: str, error: KafkaError) -> None:
        super().__init__(message)
        self.error = error


class OutboxRow(NamedTuple):
    """One transaction's events, in order (sql/008): one CloudEvent per line of `payloads`."""

    id: int
    event_types: list[str]
    keys: list[str]
    payloads: str
    created_at: datetime


class OutboxRelay:
    """Publishes until `stop` is set, then returns after finishing (flushing and marking) its round."""

    def __init__(self, settings: Settings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self._topics = settings.output_topics()
        self._lock_conn: psycopg.Connection[Any] | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._producer: kafka.IdempotentProducer | None = None
        self._leader = False
        self._standing_by = False
        self._prune_at = 0.0
        self._backlog_at = 0.0

    def run(self) -> int:
        try:
            while not self.stop.is_set():
                # A fresh Retrying per step: the backoff grows over consecutive failures only.
                Retrying(
                    retry=retry_if_exception(kafka.is_transient),
                    wait=wait_exponential_jitter(initial=0.2, max=self.settings.relay_retry_max_s),
                    stop=stop_when_event_set(self.stop),
                    sleep=self._sleep,
                    before_sleep=self._failed,
                    retry_error_callback=lambda _: None,
                )(self._step)
        finally:
            self._disconnect()
            log.info("relay stopped")
        return 0

    def _step(self) -> None:
        HEARTBEAT.set_to_current_time()
        lock_conn, conn = self._connect()
        if not self._leader and not self._take_lead(lock_conn):
            self._sleep(self.settings.relay_poll_interval_s)
            return
        if time.monotonic() >= self._prune_at:
            self._prune_chunk(conn)
        published = self._publish_round(conn)
        if time.monotonic() >= self._backlog_at:
            BACKLOG.set(_scalar(conn, queries.OUTBOX_BACKLOG))
            self._backlog_at = time.monotonic() + self.settings.relay_poll_interval_s
        # A full round means more rows are waiting; otherwise sleep until a commit notifies us.
        idle = 0.0 if published >= self.settings.relay_batch_size else self.settings.relay_poll_interval_s
        for _ in lock_conn.notifies(timeout=idle, stop_after=1):
            pass

    def _take_lead(self, lock_conn: psycopg.Connection[Any]) -> bool:
        if not _scalar(lock_conn, queries.RELAY_TRY_LOCK):
            if not self._standing_by:
                log.info("relay standing by: another relay holds the lock", pid=os.getpid())
                self._standing_by = True
            return False
        lock_conn.execute(queries.RELAY_LISTEN)
        self._leader, self._standing_by = True, False
        LEADER.set(1)
        log.info("relay is the leader", pid=os.getpid())
        return True

    def _publish_round(self, conn: psycopg.Connection[Any]) -> int:
        # Held from reading the rows until they are marked: an erasure waits for the round, so no
        # payload read before it committed is published after it (rule 17).
        conn.execute(queries.OUTBOX_ROUND_LOCK)
        try:
            return self._publish_rows(conn)
        finally:
            conn.execute(queries.OUTBOX_ROUND_UNLOCK)

    def _publish_rows(self, conn: psycopg.Connection[Any]) -> int:
        """Publish the oldest rows, up to about `relay_batch_size` events; returns how many events."""
        cursor = conn.execute(queries.OUTBOX_UNPUBLISHED, {"events": self.settings.relay_batch_size})
        rows = [OutboxRow._make(r) for r in cursor.fetchall()]
        if not rows:
            return 0
        producer = self._get_producer()
        reports: list[KafkaError | None] = []
        for row in rows:
            self._produce(producer, row, reports)
        producer.flush(self.settings.relay_delivery_timeout_s + 5)
        delivered_at = time.time()
        failed = next((i for i, error in enumerate(reports) if error is not None), len(reports))
        # The rows whose every event was delivered: the first `published` events.
        done, published = [], 0
        for row in rows:
            if published + len(row.event_types) > failed:
                break
            done.append(row)
            published += len(row.event_types)
        if done:
            conn.execute(queries.OUTBOX_MARK_PUBLISHED, [[row.id for row in done]])
            for event_type, count in collections.Counter(t for row in done for t in row.event_types).items():
                PUBLISHED.labels(event_type).inc(count)
            for row in done:
                latency = max(0.0, delivered_at - row.created_at.timestamp())
                for _ in row.event_types:
                    LATENCY.observe(latency)
            log.debug("outbox rows published", rows=len(done), events=published, last_id=done[-1].id)
        if failed < len(reports):
            error = reports[failed]
            assert error is not None
            raise PublishFailed(
                f"delivery of an event of outbox row {rows[len(done)].id} failed: {error}", error
            )
        return published

    def _produce(
        self, producer: kafka.IdempotentProducer, row: OutboxRow, reports: list[KafkaError | None]
    ) -> None:
        """Produce the row's events; each one's delivery report lands in `reports`, in produce order."""
        payloads = row.payloads.split("\n")
        if len(payloads) != len(row.event_types):
            raise ValueError(
                f"outbox row {row.id} has {len(payloads)} payloads for {len(row.event_types)} events"
            )
        unreported = KafkaError(KafkaError._MSG_TIMED_OUT, "no delivery report")
        for event_type, key, payload in zip(row.event_types, row.keys, payloads, strict=True):
            topic = self._topics.get(event_type)
            if topic is None:
                raise ValueError(f"outbox row {row.id} has unknown event type {event_type!r}")
            index = len(reports)
            reports.append(unreported)

            def on_delivery(error: KafkaError | None, _message: object, index: int = index) -> None:
                reports[index] = error

            producer.produce(topic, payload, key, headers=[CONTENT_TYPE], on_delivery=on_delivery)

    def _prune_chunk(self, conn: psycopg.Connection[Any]) -> None:
        """Delete one chunk of old published rows; come back next step until a chunk comes back short."""
        hours = self.settings.outbox_retention_hours
        deleted = conn.execute(queries.OUTBOX_PRUNE, [hours, PRUNE_CHUNK]).rowcount
        if deleted:
            log.info("outbox pruned", rows=deleted, retention_hours=hours)
        if deleted < PRUNE_CHUNK:
            self._prune_at = time.monotonic() + self.settings.relay_prune_interval_s

    def _connect(self) -> tuple[psycopg.Connection[Any], psycopg.Connection[Any]]:
        if self._lock_conn is None or self._conn is None:
            self._disconnect()
            self._lock_conn = self._open()
            # The lock lives as long as the server-side session: keepalives end a session whose client
            # vanished behind a dead network within half a minute, instead of the OS's two hours.
            self._lock_conn.execute(queries.RELAY_SESSION_KEEPALIVES)
            self._conn = self._open()
            self._conn.execute(queries.PREFER_INDEXES, [False])  # a connection of its own: a session setting
        return self._lock_conn, self._conn

    def _open(self) -> psycopg.Connection[Any]:
        return db.connect(self.settings, "identity-relay")

    def _disconnect(self) -> None:
        """Close both connections; closing the lock connection hands leadership to a standby."""
        for conn in (self._lock_conn, self._conn):
            if conn is not None:
                conn.close()
        self._lock_conn = self._conn = None
        if self._leader:
            log.info("relay gave up leadership", pid=os.getpid())
        self._leader = False
        LEADER.set(0)

    def _get_producer(self) -> kafka.IdempotentProducer:
        if self._producer is None:
            self._producer = kafka.IdempotentProducer(
                self.settings.kafka_bootstrap_servers,
                client_id="identity-relay",
                delivery_timeout_s=self.settings.relay_delivery_timeout_s,
            )
        return self._producer

    def _failed(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, psycopg.OperationalError):
            self._disconnect()
        kafka_error = error.error if isinstance(error, PublishFailed) else None
        if isinstance(error, KafkaException) and error.args:
            kafka_error = error.args[0]
        if isinstance(kafka_error, KafkaError) and self._producer is not None:
            # A fatal error seen in a delivery report: the next round's produce replaces the client.
            self._producer.fail_fatally(kafka_error)
        log.warning(
            "relay round failed, retrying",
            error=type(error).__name__,
            detail=str(error),
            attempt=state.attempt_number,
            retry_in_s=round(state.upcoming_sleep, 2),
        )

    def _sleep(self, seconds: float) -> None:
        HEARTBEAT.set_to_current_time()  # waiting out a failure is alive too
        self.stop.wait(seconds)


def _scalar(conn: psycopg.Connection[Any], statement: LiteralString) -> Any:
    row = conn.execute(statement).fetchone()
    assert row is not None
    return row[0]
