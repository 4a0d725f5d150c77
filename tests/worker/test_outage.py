"""A database outage mid-stream: the worker backs off with its partitions paused, then resumes."""

from __future__ import annotations

import psycopg
import pytest

from consumer.core import check_invariants
from tests.support.database import processed
from tests.support.kafka import committed_offsets, envelope, produce, structured
from tests.support.polling import wait_until
from tests.support.processes import Service, StartService
from tests.support.services import RestartablePostgres
from tests.support.topics import Topics


def retried(worker: Service, attempts: int) -> bool:
    return any(
        e.get("event") == "transient failure; retrying" and e["attempt"] >= attempts for e in worker.logs()
    )


def test_database_outage_mid_stream_loses_nothing(
    start_worker: StartService, topics: Topics, kafka_bootstrap: str, own_postgres: RestartablePostgres
) -> None:
    url = own_postgres.url
    events = [
        structured(envelope(f"o{i}", f"guest{i % 40}@example.com", str(3100000 + i))) for i in range(200)
    ]
    worker = start_worker(
        DATABASE_URL=url,
        WORKER_BATCH_SIZE="30",
        WORKER_RETRY_INITIAL_S="0.2",
        WORKER_RETRY_MAX_S="1",
        # Shorter than the outage below: the worker must keep polling while it waits.
        KAFKA_MAX_POLL_INTERVAL_MS="7000",
    )
    produce(kafka_bootstrap, topics.checkout, events[:100])
    wait_until(lambda: processed(url) == 100, 60, "the events before the outage")

    own_postgres.stop()
    produce(kafka_bootstrap, topics.checkout, events[100:])
    # Ten backoffs capped at 1 s take longer than max.poll.interval.ms.
    wait_until(lambda: retried(worker, 10), 60, "the worker to back off ten times", interval=0.5)
    own_postgres.start()

    wait_until(lambda: processed(url) == len(events), 60, "the events after the outage")
    assert worker.process.poll() is None
    assert worker.logged("partitions resumed")
    assert not any(e.get("event") in ("partitions lost", "partitions revoked") for e in worker.logs())
    assert_applied_once(url, len(events))
    assert worker.stop() == 0
    assert committed_offsets(kafka_bootstrap, topics.group, topics.checkout, 1) == {0: len(events)}


@pytest.mark.parametrize("partitions", [4])
def test_a_worker_stopped_during_an_outage_hands_its_partitions_over(
    start_worker: StartService, topics: Topics, kafka_bootstrap: str, own_postgres: RestartablePostgres
) -> None:
    url = own_postgres.url
    events = [structured(envelope(f"h{i}", f"visitor{i}@example.com", str(3200000 + i))) for i in range(200)]
    fast_retries = {"DATABASE_URL": url, "WORKER_RETRY_INITIAL_S": "0.2", "WORKER_RETRY_MAX_S": "1"}
    first, second = start_worker(**fast_retries), start_worker(**fast_retries)
    wait_until(
        lambda: len(first.owned()) == len(second.owned()) == 2, 60, "two partitions each", interval=0.5
    )

    own_postgres.stop()
    produce(kafka_bootstrap, topics.checkout, events)
    wait_until(lambda: retried(first, 2) and retried(second, 2), 60, "both workers to back off", interval=0.5)
    # SIGTERM while waiting out the outage: the in-flight batch is abandoned, its offsets not stored.
    assert second.stop() == 0
    assert second.logged("shutting down during an outage; the batch will be redelivered")
    # The survivor takes the partitions over while paused, and keeps them paused until it recovers.
    wait_until(lambda: len(first.owned()) == 4, 60, "the takeover", interval=0.5)
    own_postgres.start()

    wait_until(lambda: processed(url) == len(events), 60, "every event")
    assert first.process.poll() is None
    assert_applied_once(url, len(events))
    assert first.stop() == 0
    assert sum(committed_offsets(kafka_bootstrap, topics.group, topics.checkout, 4).values()) == len(events)


def assert_applied_once(url: str, events: int) -> None:
    """The graph is consistent and every event has exactly one identity.resolved outbox row."""
    with psycopg.connect(url) as conn:
        assert check_invariants(conn) == []
        (resolved,) = conn.execute(
            "SELECT count(*) FROM outbox_event WHERE event_type = 'identity.resolved'"
        ).fetchone() or (0,)
    assert resolved == events
