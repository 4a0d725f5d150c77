"""The guardrails (rules 12-16) and rule 8's order convergence, end to end through the worker and relay."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from consumer.contract import MERGED_TYPE, RESOLVED_TYPE, SPLIT_TYPE, SplitData
from consumer.core import Guardrails, check_invariants
from consumer.core.blocking import list_blocks, unblock_value
from consumer.migrate import migrate
from tests.support import SOURCE
from tests.support.database import processed, unpublished
from tests.support.kafka import OutputReader, Record, envelope, produce, structured
from tests.support.polling import wait_until
from tests.support.services import fresh_database
from tests.support.stack import Stack
from tests.support.topics import Topics

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HUB = "5550100"  # the shop's till phone, typed for every walk-in buyer


def checkout(event_id: str, email: str | None, phone: str | None, minute: int) -> Record:
    return structured(envelope(event_id, email, phone, time=T0 + timedelta(minutes=minute)))


def primaries_of(db: psycopg.Connection[Any]) -> dict[str, int]:
    """Each event's row, by the primary of its identity."""
    rows = db.execute("SELECT source_event_id, coalesce(linked_id, id) FROM contact").fetchall()
    db.commit()
    return dict(rows)


def test_a_hub_phone_is_blocked_split_dead_lettered_and_unblocked(
    stack: Stack, db: psycopg.Connection[Any], reader: OutputReader
) -> None:
    buyers = [checkout(f"b{n}", f"buyer{n}@hillvalley.edu", HUB, n) for n in range(25)]
    till_only = checkout("till", None, HUB, 30)
    produce(stack.bootstrap, stack.topics.checkout, [*buyers, till_only])
    stack.start("worker")
    stack.start("relay")
    url = stack.database_url
    wait_until(lambda: processed(url) == len(buyers), 60, "every buyer applied")
    wait_until(lambda: unpublished(url) == 0, 30, "every outbox row published")

    # Rule 13: the 21st email on the phone blocked it, and split the identity of the first 20.
    (block,) = list_blocks(db)
    assert (block.kind, block.value, block.reason) == ("phone", HUB, "fan_out")
    rows = primaries_of(db)
    assert len(set(rows.values())) == 25, "every buyer is a customer of their own"
    outputs = reader.read_until(lambda m: any(x.value["type"] == SPLIT_TYPE for x in m))
    (split,) = [SplitData.model_validate(m.value["data"]) for m in outputs if m.value["type"] == SPLIT_TYPE]
    assert (split.cause.type, split.cause.id, split.formerPrimaryId) == (
        "value_blocked",
        block.id,
        rows["b0"],
    )
    assert sorted(i.primaryContactId for i in split.identities) == sorted(rows[f"b{n}"] for n in range(20))
    # The checkouts after the block resolve to small identities that do not store the blocked phone.
    late = {
        m.value["data"]["sourceEventId"]: m.value["data"]["contact"]
        for m in reader.messages
        if m.value["type"] == RESOLVED_TYPE
    }
    assert all(late[f"b{n}"]["phoneNumbers"] == [] for n in range(21, 25))
    assert late["b24"]["emails"] == ["buyer24@hillvalley.edu"]

    # Rule 12: the till-only checkout has nothing left: dead-lettered with its reason.
    dlq = OutputReader(stack.bootstrap, [stack.topics.dlq], partitions=1)
    try:
        (dead,) = dlq.read_until(lambda m: len(m) >= 1)
    finally:
        dlq.close()
    assert (dead.value["id"], dead.headers["error.reason"]) == ("till", b"blocked_identifier")

    # Rule 16: an operator unblocks it: the identities sharing it merge again, announced as merges.
    unblocked = unblock_value(db, block.id, Guardrails(), removed_by="test")
    ((merge, _),) = unblocked.merges
    assert merge.surviving_primary_id == rows["b0"]
    wait_until(lambda: unpublished(url) == 0, 30, "the merge published")
    unblock_event = f"{block.id}:{rows['b0']}"

    def remerged(messages: list[Any]) -> list[dict[str, Any]]:
        return [
            m.value["data"]
            for m in messages
            if m.value["type"] == MERGED_TYPE and m.value["data"]["sourceEventId"] == unblock_event
        ]

    (data,) = remerged(reader.read_until(lambda m: bool(remerged(m))))
    assert data["survivingPrimaryId"] == rows["b0"]
    # Only the rows holding the phone: those created while it was blocked do not store it.
    assert sorted(data["mergedPrimaryIds"]) == sorted(rows[f"b{n}"] for n in range(1, 20))
    assert len(set(primaries_of(db).values())) == 1 + 5

    # ... and the dead letter, replayed, now goes through.
    replay = subprocess.run(
        [sys.executable, "-m", "consumer", "dlq-replay", "--reason", "blocked_identifier", "--idle-s", "2"],
        env={**os.environ, **stack.base_env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    wait_until(lambda: processed(url) == len(buyers) + 1, 60, "the replayed checkout applied")
    assert check_invariants(db) == []


def history(rng: random.Random) -> list[Record]:
    """Households (a phone shared by 2-4 emails), a few bridges between them, one-field checkouts,
    every event at its own time."""
    events = []
    for n in range(160):
        family = rng.randrange(30)
        other = rng.randrange(30) if rng.random() < 0.05 else family
        email: str | None = f"m{family}.{rng.randrange(3)}@hillvalley.edu"
        phone: str | None = str(6_000_000 + other * 10 + rng.randrange(2))
        if rng.random() < 0.15:
            email = None
        elif rng.random() < 0.15:
            phone = None
        events.append(checkout(f"h{n}", email, phone, n))
    return events


def identities(url: str) -> set[tuple[frozenset[str], str]]:
    """Each identity as its values and the event of its primary row."""
    found: dict[int, tuple[set[str], list[str]]] = {}
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT coalesce(linked_id, id), email, phone_number, source_event_id, linked_id IS NULL"
            " FROM contact"
        ).fetchall()
    for primary, email, phone, event_id, is_primary in rows:
        values, primary_event = found.setdefault(primary, (set(), []))
        values.update(v for v in (email, phone) if v is not None)
        if is_primary:
            primary_event.append(event_id)
    return {(frozenset(values), event_id) for values, (event_id,) in found.values()}


def test_one_history_in_any_order_gives_the_same_identities_and_primaries(
    stack: Stack, database_url: str
) -> None:
    """Rule 8's amendment: an older event keeps its row even when it brings nothing new."""
    rng = random.Random(1955)
    events = history(rng)
    shuffled = rng.sample(events, len(events))
    results = []
    for delivery in (events, shuffled):
        topics = Topics.create(stack.bootstrap, partitions=4)
        with fresh_database(database_url) as url:
            migrate(url)
            produce(stack.bootstrap, topics.checkout, delivery)
            worker = stack.start("worker", DATABASE_URL=url, **topics.env())
            wait_until(lambda url=url: processed(url, SOURCE) == len(events), 60, "every event applied")
            results.append(identities(url))
            assert worker.stop() == 0
    in_order, any_order = results
    assert len(in_order) > 10, "the history should make many customers"
    assert any_order == in_order
