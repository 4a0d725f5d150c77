"""Hostile records produced to a REAL running worker: each one is either processed (it has its
identity.resolved outbox row) or dead-lettered with a reason, untouched; the worker never stops.

tests/worker/test_decode.py already feeds the decoder garbage in-process; this sends it through the
broker to the running process, with the database behind it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.normalize import Normalizer
from consumer.worker.decode import Reason, header_dict
from tests.support.kafka import STRUCTURED, envelope
from tests.support.polling import wait_until
from tests.support.processes import Service
from tests.support.stack import Stack, record_figures
from tests.support.topics import Topics

NORMALIZER = Normalizer()
SQL = [
    "'; DROP TABLE contact; --",
    "x' OR '1'='1",
    "$$; SELECT pg_sleep(30); $$",
    "\\x00\\\\'\"",
    "1); DELETE FROM processed_event; --",
]


@dataclass(frozen=True)
class Hostile:
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, str | bytes | None]]
    idempotency_key: tuple[str, str] | None
    """(source, id) if the record could be a valid event, else None: it must be dead-lettered."""
    data: dict[str, Any]
    """The event's data as sent, to check what a processed record stored."""


def _huge(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda c, n: c * n, alphabet, st.integers(1_000, 200_000))


def hostile_values() -> st.SearchStrategy[object]:
    ascii_char = st.characters(min_codepoint=32, max_codepoint=126)
    return st.one_of(
        st.booleans(),
        st.integers(min_value=-(10**40), max_value=10**40),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=60),
        st.text(st.characters(max_codepoint=0x1F), max_size=20),
        _huge(ascii_char),
        st.sampled_from(SQL),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    )


def emails() -> st.SearchStrategy[object]:
    """Mostly odd yet acceptable addresses (unicode, control characters, SQL), which must be stored as
    given; sometimes anything at all."""
    local = st.text(st.characters(min_codepoint=1, exclude_characters="@"), min_size=1, max_size=30)
    acceptable = st.one_of(local, st.sampled_from(SQL)).map(lambda s: s + "@example.com")
    return st.one_of(acceptable, st.none(), hostile_values())


def phones() -> st.SearchStrategy[object]:
    acceptable = st.one_of(
        st.integers(min_value=0, max_value=10**15), st.from_regex(r"\+?[0-9][0-9 ().-]{2,20}", fullmatch=True)
    )
    # Enormous numbers as phones are rejected by the length limit, not stored truncated.
    return st.one_of(acceptable, st.none(), st.integers(min_value=10**32, max_value=10**60), hostile_values())


@st.composite
def hostile_records(draw: st.DrawFn) -> Hostile:
    event = envelope(f"h-{uuid.uuid4().hex}", draw(emails()), draw(phones()))
    if draw(st.booleans()):
        event["data"]["orderId"] = draw(st.one_of(st.text(max_size=40), st.integers(), hostile_values()))
    # The shape of the record by plain chance: hypothesis favours edge cases, which here would mean
    # almost every envelope broken and hardly any hostile value reaching the database.
    chance = draw(st.randoms(use_true_random=True))
    attributes = st.sets(st.sampled_from(["id", "source", "specversion", "type", "time"]), max_size=2)
    for attribute in draw(attributes) if chance.random() < 0.15 else ():
        event[attribute] = draw(
            st.one_of(st.none(), st.integers(), st.text(max_size=30), st.sampled_from(SQL))
        )
    key = draw(st.one_of(st.none(), st.binary(max_size=40)))
    idempotency_key = (
        (event["source"], event["id"])
        if isinstance(event.get("source"), str) and isinstance(event.get("id"), str)
        else None
    )
    text = json.dumps(event).encode()
    kind = chance.choice(["structured"] * 6 + ["truncated", "bytes", "binary-mode", "binary-mode"])
    if kind == "truncated":
        return Hostile(text[: draw(st.integers(0, len(text) - 1))], key, list(STRUCTURED), None, {})
    if kind == "bytes":
        return Hostile(
            draw(st.binary(max_size=2000)), key, draw(st.sampled_from([[], list(STRUCTURED)])), None, {}
        )
    if kind == "binary-mode":
        # ce_id and ce_source carry the attributes' text as is, so the idempotency key is known; the
        # other attributes may be any bytes.
        headers: list[tuple[str, str | bytes | None]] = [
            (
                f"ce_{k}",
                str(v).encode()
                if k in ("id", "source")
                else chance.choice([str(v).encode()] * 3 + [b"\xff\xfe"]),
            )
            for k, v in event.items()
            if k not in ("data", "datacontenttype")
        ]
        headers.append(("content-type", b"application/json"))
        return Hostile(
            json.dumps(event["data"]).encode(),
            key,
            headers,
            (str(event["source"]), str(event["id"])),
            event["data"],
        )
    return Hostile(text, key, list(STRUCTURED), idempotency_key, event["data"])


class DeadLetters:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"dlq-{uuid.uuid4().hex}"})
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.by_origin: dict[tuple[int, int], Message] = {}

    def read(self) -> dict[tuple[int, int], Message]:
        for m in self.consumer.consume(500, 0.2):
            assert m.error() is None
            headers = header_dict(m.headers())
            self.by_origin[(int(headers["original.partition"]), int(headers["original.offset"]))] = m
        return self.by_origin


@pytest.fixture
def hostile_stack(
    database_url: str, kafka_bootstrap: str, tmp_path: Path, db: psycopg.Connection[Any]
) -> Iterator[tuple[Stack, Service, DeadLetters]]:
    stack = Stack(database_url, kafka_bootstrap, Topics.create(kafka_bootstrap, 1), tmp_path)
    worker = stack.start("worker", WORKER_BATCH_SIZE="50")
    dead = DeadLetters(kafka_bootstrap, stack.topics.dlq)
    try:
        yield stack, worker, dead
    finally:
        dead.consumer.close()
        stack.close()


def produce_hostile(bootstrap: str, topic: str, records: list[Hostile]) -> list[tuple[int, int]]:
    """Produce in order; the (partition, offset) each record got."""
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 2_000_000})
    placed: list[tuple[int, int] | None] = [None] * len(records)

    def report(index: int) -> Any:
        def on_delivery(error: KafkaError | None, message: Message) -> None:
            assert error is None, error
            placed[index] = (message.partition() or 0, message.offset() or 0)

        return on_delivery

    for i, r in enumerate(records):
        producer.produce(topic, r.value, r.key, headers=r.headers, on_delivery=report(i))
    assert producer.flush(30) == 0
    assert all(p is not None for p in placed)
    return [p for p in placed if p is not None]


def stored_together(conn: psycopg.Connection[Any], data: dict[str, Any]) -> bool:
    """The normalized identifiers of a processed event are in the graph, in one cluster."""
    identifiers = NORMALIZER.identifiers(data.get("email"), data.get("phoneNumber"))
    rows = conn.execute(
        "SELECT coalesce(linked_id, id), email = %s, phone_number = %s FROM contact"
        " WHERE deleted_at IS NULL AND (email = %s OR phone_number = %s)",
        (identifiers.email, identifiers.phone, identifiers.email, identifiers.phone),
    ).fetchall()
    conn.commit()
    has_email = identifiers.email is None or any(row[1] for row in rows)
    has_phone = identifiers.phone is None or any(row[2] for row in rows)
    return has_email and has_phone and len({row[0] for row in rows}) == 1


def outcome(conn: psycopg.Connection[Any], key: tuple[str, str] | None) -> bool:
    """True when the event with this idempotency key has been processed and answered."""
    if key is None or any("\x00" in part for part in key):
        return False  # PostgreSQL text cannot hold NUL: such a key is never stored, nor queried for
    row = conn.execute(
        "SELECT count(*) FROM outbox_event WHERE event_type = 'identity.resolved'"
        " AND payload->'data'->>'sourceEventSource' = %s AND payload->'data'->>'sourceEventId' = %s",
        key,
    ).fetchone()
    conn.commit()
    return bool(row and row[0])


TOTALS = {"records": 0, "processed": 0, "dead_lettered": 0}


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(batch=st.lists(hostile_records(), min_size=8, max_size=30))
def test_every_hostile_record_is_processed_or_dead_lettered_and_the_worker_goes_on(
    hostile_stack: tuple[Stack, Service, DeadLetters], batch: list[Hostile]
) -> None:
    stack, worker, dead = hostile_stack
    offsets = produce_hostile(stack.bootstrap, stack.topics.checkout, batch)
    with psycopg.connect(stack.database_url) as conn:

        def settled() -> bool:
            letters = dead.read()
            return all(
                o in letters or outcome(conn, r.idempotency_key) for r, o in zip(batch, offsets, strict=True)
            )

        wait_until(settled, 60, "every record", interval=0.05)
        for record, origin in zip(batch, offsets, strict=True):
            letter = dead.by_origin.get(origin)
            if letter is None:
                TOTALS["processed"] += 1
                assert stored_together(conn, record.data)
                continue
            TOTALS["dead_lettered"] += 1
            headers = header_dict(letter.headers())
            assert headers["error.reason"].decode() in set(Reason)
            assert headers["error.message"]
            assert headers["original.topic"].decode() == stack.topics.checkout
            assert (letter.value(), letter.key()) == (record.value, record.key)
            if headers["error.reason"] != Reason.KEY_REUSED.encode():
                assert not outcome(conn, record.idempotency_key), "both processed and dead-lettered"
    TOTALS["records"] += len(batch)
    assert worker.process.poll() is None, "the worker stopped"
    record_figures("hostile-kafka", **TOTALS)
