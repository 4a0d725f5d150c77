"""The outbox relay as a real process against real PostgreSQL and a real Kafka-compatible broker."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumer.contract import MERGED_TYPE, RESOLVED_TYPE
from consumer.local.embedded import create_topics, free_port, start_broker
from tests.support import SOURCE
from tests.support.database import outbox_rows, published, reconcile_events, synthetic_events, unpublished
from tests.support.kafka import Output, OutputReader
from tests.support.polling import wait_until
from tests.support.processes import StartService
from tests.support.topics import OUTPUT_PARTITIONS, Topics

LEADS = "relay is the leader"
STANDS_BY = "relay standing by: another relay holds the lock"


def topic_of(topics: Topics, event_type: str) -> str:
    return topics.resolved if event_type == RESOLVED_TYPE else topics.merged


def assert_matches_outbox(rows: list[tuple[Any, ...]], messages: list[Output], topics: Topics) -> None:
    """Every event is on its topic with its key and payload; per key, messages follow the outbox order
    (row id, then position in the row); an event sent twice (after a crash) is sent identically."""
    first: dict[str, Output] = {}
    for message in messages:
        assert first.setdefault(message.id, message) == message
    expected: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for _, event_type, key, payload, is_published in rows:
        message = first[payload["id"]]
        assert is_published
        assert (message.topic, message.key, message.value) == (topic_of(topics, event_type), key, payload)
        assert message.headers == {"content-type": b"application/cloudevents+json"}
        expected[(message.topic, key)].append(message.id)
    actual: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for message in messages:
        # Duplicates repeat a suffix of a key's stream; keep each id where it first appeared.
        if message.id not in actual[(message.topic, message.key)]:
            actual[(message.topic, message.key)].append(message.id)
    assert actual == expected


def test_publishes_each_row_to_its_topic_with_key_payload_and_order(
    db: psycopg.Connection[Any], start_relay: StartService, reader: OutputReader, topics: Topics
) -> None:
    reconcile_events(db, synthetic_events(300), batch=50)
    rows = outbox_rows(db)
    assert {row[1] for row in rows} == {RESOLVED_TYPE, MERGED_TYPE}
    assert len({row[0] for row in rows}) == 6, "one outbox row per transaction"
    port = free_port()

    # Rounds of 20 events: every row, of 50 events or more, goes whole and alone.
    relay = start_relay(RELAY_METRICS_PORT=str(port), RELAY_BATCH_SIZE="20")
    wait_until(lambda: unpublished(db) == 0, what="every row marked published")
    messages = reader.read_until(lambda m: len(m) >= len(rows))

    assert len(messages) == len(rows), "a relay that never failed sends each row once"
    assert_matches_outbox(outbox_rows(db), messages, topics)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    merges = sum(1 for row in rows if row[1] == MERGED_TYPE)
    assert f'identity_relay_published_total{{type="identity.merged"}} {merges}.0' in metrics
    assert "identity_relay_leader 1.0" in metrics
    assert "identity_relay_outbox_backlog 0.0" in metrics
    assert relay.stop() == 0
    assert relay.logged("relay stopped")


# A test-only deferred trigger parks a chosen transaction at COMMIT, after its outbox rows took their
# ids, until the test releases an advisory lock: a transaction that commits late, on demand.
GATE = 7_340_001
HOLD_COMMITS = f"""
CREATE FUNCTION relay_test_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('relay_test.hold', true) = 'on' THEN
        PERFORM pg_advisory_xact_lock({GATE});
    END IF;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER relay_test_hold AFTER INSERT ON outbox
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION relay_test_hold();
"""
RELEASE_COMMITS = """
DROP TRIGGER relay_test_hold ON outbox;
DROP FUNCTION relay_test_hold();
"""


@pytest.fixture
def hold_commits(database_url: str) -> Iterator[None]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(HOLD_COMMITS)
        try:
            yield
        finally:
            conn.execute(RELEASE_COMMITS)


def test_a_row_committed_late_with_a_lower_id_is_still_published(
    db: psycopg.Connection[Any],
    database_url: str,
    hold_commits: None,
    start_relay: StartService,
    reader: OutputReader,
    topics: Topics,
) -> None:
    start_relay()
    # The gate closes first on the way out, so a failing test cannot leave the writer parked.
    with (
        psycopg.connect(database_url, application_name="relay-test-late") as late,
        psycopg.connect(database_url, autocommit=True) as gate,
    ):
        gate.execute("SELECT pg_advisory_lock(%s)", [GATE])
        late.execute("SET relay_test.hold = 'on'")
        late.commit()
        writer = threading.Thread(
            target=reconcile_events, args=(late, [("late", "late@example.com", "+15550000")])
        )
        writer.start()
        waiting_at_commit = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'relay-test-late' AND wait_event_type = 'Lock'"
        )
        wait_until(lambda: gate.execute(waiting_at_commit).fetchone() == (1,), what="the late commit")

        reconcile_events(db, synthetic_events(30))
        later = outbox_rows(db)
        wait_until(lambda: published(db) == len(later), what="later rows published")
        reader.read_until(lambda m: len(m) >= len(later))

        gate.execute("SELECT pg_advisory_unlock(%s)", [GATE])
        writer.join(30)
    wait_until(lambda: unpublished(db) == 0, what="the late row published")
    rows = outbox_rows(db)
    late_rows = [row for row in rows if row[3]["data"]["sourceEventId"] == "late"]
    assert late_rows
    assert max(row[0] for row in late_rows) < min(row[0] for row in later)
    messages = reader.read_until(lambda m: len(m) >= len(rows))
    assert_matches_outbox(rows, messages, topics)


def test_rows_of_one_key_go_out_in_commit_order_whatever_the_txids(
    db: psycopg.Connection[Any], database_url: str, start_relay: StartService, reader: OutputReader
) -> None:
    # The core's shape: transaction B locks one primary (taking the smaller txid), then waits for key
    # 42's primary, locked by A; A writes key 42 and commits, then B does. An unrelated transaction
    # with a txid in between stays open all along; a txid-based filter would publish B's row first.
    insert = "INSERT INTO outbox (event_types, message_keys, payloads) VALUES (ARRAY[%s], ARRAY['42'], %s)"

    def event(event_id: str) -> str:
        return json.dumps({"specversion": "1.0", "id": event_id, "source": SOURCE, "type": RESOLVED_TYPE})

    with (
        psycopg.connect(database_url) as a,
        psycopg.connect(database_url) as b,
        psycopg.connect(database_url) as unrelated,
    ):
        b.execute("SELECT pg_current_xact_id()")
        unrelated.execute("SELECT pg_current_xact_id()")
        a.execute(insert, [RESOLVED_TYPE, event("first")])
        a.commit()
        b.execute(insert, [RESOLVED_TYPE, event("second")])
        b.commit()
        start_relay()
        messages = reader.read_until(lambda m: len(m) >= 2)
        unrelated.rollback()
    assert [m.id for m in messages] == ["first", "second"]


def test_only_the_leader_publishes_and_a_standby_takes_over_when_it_is_killed(
    db: psycopg.Connection[Any], start_relay: StartService, reader: OutputReader, topics: Topics
) -> None:
    leader = start_relay()
    wait_until(lambda: leader.logged(LEADS), what="a leader")
    standby = start_relay()
    wait_until(lambda: standby.logged(STANDS_BY), what="a standby")

    reconcile_events(db, synthetic_events(150))
    before = len(outbox_rows(db))
    wait_until(lambda: unpublished(db) == 0, what="the leader publishing")
    assert len(reader.read_until(lambda m: len(m) >= before)) == before
    assert not standby.logged(LEADS)

    reconcile_events(db, synthetic_events(150, first=150))
    leader.kill()
    wait_until(lambda: standby.logged(LEADS), what="the standby taking over")
    wait_until(lambda: unpublished(db) == 0, what="the standby publishing")
    rows = outbox_rows(db)
    messages = reader.read_until(lambda m: len({x.id for x in m}) >= len(rows))
    assert_matches_outbox(rows, messages, topics)


def test_every_row_is_published_when_the_relay_is_killed_again_and_again(
    db: psycopg.Connection[Any],
    database_url: str,
    start_relay: StartService,
    reader: OutputReader,
    topics: Topics,
) -> None:
    events = list(synthetic_events(3000))
    with psycopg.connect(database_url) as conn:
        writer = threading.Thread(target=reconcile_events, args=(conn, events, 25))
        writer.start()
        for _ in range(4):
            relay = start_relay(RELAY_BATCH_SIZE="100")
            target = published(db) + 300

            def progressed(target: int = target) -> bool:
                return published(db) >= target or (not writer.is_alive() and unpublished(db) == 0)

            wait_until(progressed, what="some progress")
            relay.kill()
        start_relay()
        writer.join(120)
    wait_until(lambda: unpublished(db) == 0, what="every row published")

    rows = outbox_rows(db)
    messages = reader.read_until(lambda m: len({x.id for x in m}) >= len(rows), timeout=60)
    assert_matches_outbox(rows, messages, topics)
    resolved_ids: dict[str, set[str]] = defaultdict(set)
    for message in messages:
        if message.topic == topics.resolved:
            resolved_ids[message.value["data"]["sourceEventId"]].add(message.id)
    assert resolved_ids.keys() == {event_id for event_id, _, _ in events}
    assert all(len(ids) == 1 for ids in resolved_ids.values()), "one output id per source event"


def test_pruning_deletes_only_published_rows_older_than_the_retention(
    db: psycopg.Connection[Any], start_relay: StartService
) -> None:
    reconcile_events(db, synthetic_events(60))
    relay = start_relay()
    wait_until(lambda: unpublished(db) == 0, what="rows published")
    assert relay.stop() == 0
    old = [row[0] for row in outbox_rows(db)][::2]
    db.execute("UPDATE outbox SET published_at = now() - interval '25 hours' WHERE id = ANY(%s)", [old])
    db.commit()
    reconcile_events(db, synthetic_events(60, first=60))
    # Old but never published: must survive, get published, and stay.
    db.execute("UPDATE outbox SET created_at = now() - interval '48 hours' WHERE published_at IS NULL")
    db.commit()
    keep = {row[0] for row in outbox_rows(db)} - set(old)

    start_relay(OUTBOX_RETENTION_HOURS="24")
    wait_until(lambda: unpublished(db) == 0, what="new rows published")
    wait_until(lambda: {row[0] for row in outbox_rows(db)} == keep, what="old published rows pruned")


def test_recovers_when_its_database_sessions_are_killed(
    db: psycopg.Connection[Any], start_relay: StartService, reader: OutputReader, topics: Topics
) -> None:
    relay = start_relay()
    wait_until(lambda: relay.logged(LEADS), what="a leader")
    reconcile_events(db, synthetic_events(60))
    wait_until(lambda: unpublished(db) == 0, what="rows published")

    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'identity-relay'"
    )
    db.commit()
    reconcile_events(db, synthetic_events(60, first=60))
    wait_until(lambda: unpublished(db) == 0, what="rows published after reconnecting")
    assert relay.process.poll() is None
    assert relay.logged("relay round failed, retrying")
    rows = outbox_rows(db)
    assert_matches_outbox(rows, reader.read_until(lambda m: len({x.id for x in m}) >= len(rows)), topics)


def test_keeps_retrying_while_the_broker_is_down_and_publishes_once_it_is_back(
    db: psycopg.Connection[Any], start_relay: StartService, tmp_path: Path
) -> None:
    # A broker of this test's own, restarted on the same port: Tansu keeps nothing, so the restarted
    # broker knows neither the topics nor the relay's idempotent producer id.
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = start_broker(port, log=tmp_path / "tansu.log")
    try:
        topics = Topics.create(bootstrap)
        relay = start_relay(
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            RELAY_DELIVERY_TIMEOUT_S="2",
            RELAY_RETRY_MAX_S="1",
            **topics.env(),
        )
        reconcile_events(db, synthetic_events(30))
        wait_until(lambda: unpublished(db) == 0, what="rows published")

        broker.stop()
        reconcile_events(db, synthetic_events(30, first=30))
        wait_until(lambda: relay.logged("relay round failed, retrying"), what="a failed round")
        assert unpublished(db) > 0
        broker = start_broker(port, log=tmp_path / "tansu.log")
        create_topics(bootstrap, {topics.resolved: OUTPUT_PARTITIONS, topics.merged: OUTPUT_PARTITIONS})
        wait_until(lambda: unpublished(db) == 0, timeout=60, what="rows published after the restart")
        assert relay.process.poll() is None

        reader = OutputReader(bootstrap, [topics.resolved, topics.merged])
        try:
            later = [row for row in outbox_rows(db) if int(row[3]["data"]["sourceEventId"][1:]) >= 30]
            assert_matches_outbox(later, reader.read_until(lambda m: len(m) >= len(later)), topics)
        finally:
            reader.close()
    finally:
        broker.stop()
