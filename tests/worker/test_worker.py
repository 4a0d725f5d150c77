"""The real worker process against the real broker and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from consumer.core import check_invariants, reconcile_batch
from consumer.local.embedded import free_port
from consumer.migrate import migrate
from consumer.normalize import Normalizer
from consumer.worker.decode import decode, header_dict
from tests.support.database import processed, scalar, snapshot
from tests.support.graph import UNGUARDED, UNGUARDED_ENV, clusters, components
from tests.support.kafka import Record, binary, committed_offsets, envelope, produce, read_topic, structured
from tests.support.metrics import samples, value
from tests.support.polling import wait_until
from tests.support.processes import StartService
from tests.support.services import fresh_database
from tests.support.topics import Topics

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


# Every rule the worker can exercise: new primary, secondary, nothing new, merge, a late older event,
# single-field events, formatted and numeric phones, both content modes.
RULE_EVENTS: list[Record] = [
    structured(envelope("r1", "lorraine@hillvalley.example", "123456", time=at(10))),
    structured(envelope("r2", "lorraine@hillvalley.example", "555 0100", time=at(11))),
    structured(envelope("r3", "LORRAINE@hillvalley.example ", 123456, time=at(12))),
    binary(envelope("r4", "george@hillvalley.example", "717171", time=at(13), order_id=42)),
    structured(envelope("r5", "george@hillvalley.example", "555-0100", time=at(14))),
    structured(envelope("r6", "biff@hillvalley.example", "999000", time=at(-60))),
    structured(envelope("r7", "biff@hillvalley.example", "717171", time=at(15))),
    structured(envelope("r8", None, "(555) 0100", time=at(16))),
    structured(envelope("r9", "marty@hillvalley.example", None)),
    binary(envelope("r10", "marty@hillvalley.example", " ", time=at(17))),
]


@pytest.fixture(scope="module")
def reference_database(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        migrate(url)
        yield url


def reference(url: str, records: list[Record]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What the core writes for the same records applied in order, in one clean batch."""
    requests = [decode(r.value, r.headers, Normalizer()) for r in records]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE contact, processed_event, merge_log, outbox RESTART IDENTITY CASCADE")
        reconcile_batch(conn, requests)  # type: ignore[arg-type]
    return snapshot(url)


def test_events_end_up_exactly_as_the_core_writes_them(
    start_worker: StartService,
    topics: Topics,
    kafka_bootstrap: str,
    database_url: str,
    reference_database: str,
) -> None:
    produce(kafka_bootstrap, topics.checkout, RULE_EVENTS[:5])
    worker = start_worker(WORKER_BATCH_SIZE="3")
    wait_until(lambda: processed(database_url) == 5, 60, "the first events")
    produce(kafka_bootstrap, topics.checkout, RULE_EVENTS[5:])
    wait_until(lambda: processed(database_url) == len(RULE_EVENTS), 60, "every event")

    contacts, outbox = snapshot(database_url)
    expected_contacts, expected_outbox = reference(reference_database, RULE_EVENTS)
    # The event without a time gets the database's clock: compare that row without its timestamp.
    assert [c[:5] for c in contacts] == [c[:5] for c in expected_contacts]
    assert [c for c in contacts if c[0] != "r9"] == [c for c in expected_contacts if c[0] != "r9"]
    assert outbox == expected_outbox
    assert {kind for kind, _, _ in outbox} == {"identity.resolved", "identity.merged"}
    assert [data["outcome"] for kind, _, data in outbox if kind == "identity.resolved"] == [
        "created_primary",
        "created_secondary",
        "matched",
        "created_primary",
        "merged",
        "created_primary",
        "merged",
        "matched",
        "created_primary",
        # r10 is older than r9, the only row it matches: it keeps its row as the primary (rule 8).
        "merged",
    ]
    with psycopg.connect(database_url) as conn:
        assert check_invariants(conn) == []
    assert worker.stop() == 0


def test_redelivered_events_change_nothing(
    start_worker: StartService, topics: Topics, kafka_bootstrap: str, database_url: str
) -> None:
    produce(kafka_bootstrap, topics.checkout, RULE_EVENTS)
    start_worker()
    wait_until(lambda: processed(database_url) == len(RULE_EVENTS), 60, "every event")
    before = snapshot(database_url)

    # The producer retried: the same events arrive again.
    produce(kafka_bootstrap, topics.checkout, RULE_EVENTS)
    total = 2 * len(RULE_EVENTS)
    wait_until(
        lambda: committed_offsets(kafka_bootstrap, topics.group, topics.checkout, 1)[0] == total,
        60,
        "the copies to be consumed",
    )
    assert snapshot(database_url) == before

    # The offsets are reset: a new group reads the whole topic again.
    fresh_group = topics.group + "-replay"
    start_worker(KAFKA_GROUP_ID=fresh_group)
    wait_until(
        lambda: committed_offsets(kafka_bootstrap, fresh_group, topics.checkout, 1)[0] == total,
        60,
        "the replay to be consumed",
    )
    assert snapshot(database_url) == before
    assert processed(database_url) == len(RULE_EVENTS)


def test_bad_events_are_dead_lettered_and_the_good_ones_around_them_processed(
    start_worker: StartService, topics: Topics, kafka_bootstrap: str, database_url: str
) -> None:
    records = [
        structured(envelope("good-1", "doc@hillvalley.example", "1985")),
        Record(b"\xff\xfe not json", b"key-1", [("trace", b"abc")]),
        structured(envelope("wrong-type", "doc@hillvalley.example") | {"type": "checkout.cancelled"}),
        structured(envelope("bool-phone", None, True), key="phone-key"),
        structured(envelope("no-ids", " ", None), key="empty"),
        structured(envelope("good-2", "jennifer@hillvalley.example", None, order_id="A1")),
        structured(envelope("good-2", "someone-else@hillvalley.example", None, order_id="A1")),
        binary(envelope("good-3", "einstein@hillvalley.example", "12121955"), key="einstein"),
    ]
    expected = {
        1: "undecodable",
        2: "invalid_event",
        3: "invalid_identifier",
        4: "no_identifiers",
        6: "key_reused",
    }
    produce(kafka_bootstrap, topics.checkout, records)
    start_worker()

    dead = sorted(read_topic(kafka_bootstrap, topics.dlq, len(expected)), key=lambda m: m.offset() or 0)
    for message, (offset, reason) in zip(dead, expected.items(), strict=True):
        original = records[offset]
        headers = dict(message.headers() or [])
        assert headers["error.reason"] == reason.encode()
        assert headers["original.topic"] == topics.checkout.encode()
        assert headers["original.partition"] == b"0"
        assert headers["original.offset"] == str(offset).encode()
        assert (message.key(), message.value()) == (original.key, original.value)
        assert all(headers[name] == value for name, value in original.headers)
        text = headers["error.message"]
        assert isinstance(text, bytes)
        assert text
        assert b"hillvalley" not in text
        assert b"someone-else" not in text
    wait_until(lambda: processed(database_url) == 3, 30, "the good events")
    assert scalar(database_url, "SELECT count(*) FROM contact") == 3
    assert scalar(database_url, "SELECT count(*) FROM outbox_event") == 3
    with psycopg.connect(database_url) as conn:
        (email,) = conn.execute("SELECT email FROM contact WHERE source_event_id = 'good-2'").fetchone() or ()
    assert email == "jennifer@hillvalley.example"


def test_sigterm_drains_commits_and_exits_zero(
    start_worker: StartService, topics: Topics, kafka_bootstrap: str, database_url: str
) -> None:
    events = [
        structured(envelope(f"t{i}", f"buyer{i % 60}@example.com", str(5550000 + i))) for i in range(300)
    ]
    port = free_port()
    worker = start_worker(WORKER_METRICS_PORT=str(port), WORKER_BATCH_SIZE="25")
    produce(kafka_bootstrap, topics.checkout, events)
    wait_until(lambda: processed(database_url) == len(events), 60, "every event")

    url = f"http://127.0.0.1:{port}"
    metrics = samples(url)
    assert value(metrics, "identity_worker_events_processed_total") == len(events)
    assert value(metrics, "identity_worker_outcomes_total", outcome="created_primary") == 60
    assert value(metrics, "identity_worker_outcomes_total", outcome="created_secondary") == 240
    assert value(metrics, "identity_worker_batch_size_count") >= len(events) / 25
    lag = ("identity_worker_consumer_lag", frozenset({"partition": "0", "topic": topics.checkout}.items()))
    wait_until(lambda: samples(url).get(lag) == 0, 10, "the lag gauge to reach 0")

    assert worker.stop() == 0
    assert committed_offsets(kafka_bootstrap, topics.group, topics.checkout, 1) == {0: len(events)}
    lines = worker.log_path.read_text().splitlines()
    assert json.loads(lines[-1])["event"] == "worker stopped"
    assert all(json.loads(line) for line in lines)
    assert "buyer1@example.com" not in worker.log_path.read_text()


@pytest.mark.parametrize("partitions", [4])
def test_two_workers_share_the_partitions_and_one_takes_over_when_the_other_stops(
    start_worker: StartService, topics: Topics, kafka_bootstrap: str, database_url: str
) -> None:
    pairs = [(f"shopper{i % 150}@example.com", str(7000000 + i % 211)) for i in range(1200)]
    events = [structured(envelope(f"s{i}", email, phone)) for i, (email, phone) in enumerate(pairs)]
    first = start_worker(WORKER_BATCH_SIZE="20", **UNGUARDED_ENV)
    second = start_worker(WORKER_BATCH_SIZE="20", **UNGUARDED_ENV)
    wait_until(
        lambda: bool(first.owned()) and bool(second.owned()),
        60,
        "both workers to own partitions",
        interval=0.5,
    )
    produce(kafka_bootstrap, topics.checkout, events)
    wait_until(lambda: processed(database_url) >= 200, 60, "the stream to be under way")

    assert first.stop() == 0  # mid-stream
    wait_until(lambda: processed(database_url) == len(events), 90, "the other worker to finish")
    assert second.logged("partitions assigned")
    assert len(second.owned()) == 4
    assert scalar(
        database_url, "SELECT count(*) FROM outbox_event WHERE event_type = 'identity.resolved'"
    ) == len(events)
    with psycopg.connect(database_url) as conn:
        assert check_invariants(conn, UNGUARDED) == []
    assert clusters(database_url) == components(pairs)


def test_dead_letters_are_replayed_once_their_cause_is_fixed(
    start_worker: StartService,
    topics: Topics,
    kafka_bootstrap: str,
    database_url: str,
    worker_env: dict[str, str],
) -> None:
    records = [
        structured(envelope("long-phone", None, "5550100123")),
        structured(envelope("cancelled", "doc@hillvalley.example") | {"type": "checkout.cancelled"}),
        structured(envelope("fine", None, "555010")),
    ]
    produce(kafka_bootstrap, topics.checkout, records)
    strict = start_worker(PHONE_MAX_LENGTH="6")  # a misconfiguration rejects a valid phone
    read_topic(kafka_bootstrap, topics.dlq, 2)
    wait_until(lambda: processed(database_url) == 1, 30, "the good event")
    assert strict.stop() == 0

    def run_replay(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "consumer", "dlq-replay", "--idle-s", "3", *args],
            env={**os.environ, **worker_env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    output = run_replay("--reason", "invalid_identifier")
    assert "invalid_identifier: 1 seen, 1 replayed" in output
    assert "invalid_event: 1 seen, 0 replayed" in output
    replayed = read_topic(kafka_bootstrap, topics.checkout, len(records) + 1)[-1]
    assert replayed.value() == records[0].value
    assert not any(name.startswith(("error.", "original.")) for name in header_dict(replayed.headers()))

    start_worker()
    wait_until(lambda: processed(database_url) == 2, 60, "the replayed event")
    assert "total: 0 seen, 0 replayed" in run_replay()


def test_offsets_wait_for_the_dead_letters_to_be_delivered(
    start_worker: StartService, topics: Topics, kafka_bootstrap: str, database_url: str
) -> None:
    records = [Record(b"not an event"), structured(envelope("good", "doc@hillvalley.example"))]
    produce(kafka_bootstrap, topics.checkout, records)
    # A topic name Kafka rejects: the dead letter cannot be delivered.
    stuck = start_worker(DLQ_TOPIC="no such topic!", WORKER_DLQ_TIMEOUT_S="1", WORKER_RETRY_MAX_S="1")
    wait_until(
        lambda: any(e.get("operation") == "dlq" and e.get("attempt", 0) >= 2 for e in stuck.logs()),
        60,
        "dead-letter delivery to be retried",
    )
    assert processed(database_url) == 1  # the good event's transaction committed...
    assert stuck.stop() == 0
    # ...but no offset was committed while its batch-mate was not dead-lettered.
    assert committed_offsets(kafka_bootstrap, topics.group, topics.checkout, 1)[0] < 0

    start_worker()
    (dead,) = read_topic(kafka_bootstrap, topics.dlq, 1)
    assert dead.value() == b"not an event"
    wait_until(
        lambda: committed_offsets(kafka_bootstrap, topics.group, topics.checkout, 1)[0] == 2,
        30,
        "the offsets to be committed",
    )
    assert processed(database_url) == 1
    assert scalar(database_url, "SELECT count(*) FROM outbox_event") == 1
