"""kill -9 the worker at random moments: every event is still applied exactly once."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from consumer.core import check_invariants
from tests.support.database import processed, scalar
from tests.support.graph import UNGUARDED, UNGUARDED_ENV, clusters, components
from tests.support.kafka import Record, envelope, produce, structured
from tests.support.polling import wait_until
from tests.support.processes import StartService
from tests.support.topics import Topics

EVENTS = 3000
KILLS = 3
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def synthetic(rng: random.Random) -> tuple[list[Record], list[tuple[str | None, str | None]]]:
    """Events over small pools of emails and phones (many merges), some redelivered by the producer."""
    records: list[Record] = []
    pairs: list[tuple[str | None, str | None]] = []
    for i in range(EVENTS):
        email: str | None = f"crash{rng.randrange(900)}@example.com"
        phone: str | None = str(4400000 + rng.randrange(1000))
        if rng.random() < 0.1:
            email = None
        elif rng.random() < 0.1:
            phone = None
        # Times out of order, so late older events demote primaries too.
        when = T0 + timedelta(seconds=rng.randrange(10 * EVENTS))
        record = structured(envelope(f"c{i}", email, phone, time=when))
        records.append(record)
        pairs.append((email, phone))
        if rng.random() < 0.05:
            records.append(record)
    return records, pairs


@pytest.mark.slow
@pytest.mark.parametrize("partitions", [4])
def test_sigkill_at_random_moments_applies_every_event_exactly_once(
    start_worker: StartService, topics: Topics, kafka_bootstrap: str, database_url: str
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    records, pairs = synthetic(rng)
    produce(kafka_bootstrap, topics.checkout, records)

    for kill in range(KILLS):
        worker = start_worker(WORKER_BATCH_SIZE="40", **UNGUARDED_ENV)
        # Kill somewhere inside the next stretch of the stream, at a moment the test does not choose.
        target = processed(database_url) + rng.randrange(150, EVENTS // (KILLS + 1))

        def reached(target: int = target) -> bool:
            return processed(database_url) >= target

        wait_until(reached, 90, f"progress before kill {kill} (seed {seed})")
        worker.kill()
    # A SIGKILLed member keeps its partitions until its session times out; the survivor then takes all.
    start_worker(WORKER_BATCH_SIZE="40", **UNGUARDED_ENV)
    wait_until(lambda: processed(database_url) == EVENTS, 120, f"every event (seed {seed})")

    assert (
        scalar(database_url, "SELECT count(*) FROM outbox_event WHERE event_type = 'identity.resolved'")
        == EVENTS
    )
    assert (
        scalar(
            database_url,
            "SELECT count(DISTINCT payload->'data'->>'sourceEventId') FROM outbox_event"
            " WHERE event_type = 'identity.resolved'",
        )
        == EVENTS
    )
    assert scalar(
        database_url, "SELECT count(*) FROM outbox_event WHERE event_type = 'identity.merged'"
    ) == scalar(database_url, "SELECT count(*) FROM merge_log")
    assert scalar(database_url, "SELECT count(*) - count(DISTINCT source_event_id) FROM contact") == 0
    with psycopg.connect(database_url) as conn:
        assert check_invariants(conn, UNGUARDED) == [], f"seed {seed}"
    assert clusters(database_url) == components(pairs), f"seed {seed}"
