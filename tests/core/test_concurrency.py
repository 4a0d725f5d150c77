"""Rule 10: many connections reconciling overlapping inputs at once leave a graph that obeys rules 3-7."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from consumer.contract import Outcome
from consumer.core import (
    BlockedInput,
    Guardrails,
    IdempotencyKeyReused,
    Input,
    KeyConflict,
    Resolution,
    Result,
    check_invariants,
    reconcile,
    reconcile_batch,
    reconcile_ready,
)
from consumer.core.blocklist import lock_key
from consumer.normalize import Identifiers
from tests.core.helpers import (
    contacts,
    counts,
    merge_log,
    request,
    run_concurrently,
    start_until_it_waits,
    table,
)
from tests.support import SOURCE, graph

THREADS = 8
ROUNDS = 30
INPUTS_PER_ROUND = 15
GROUPS_PER_ROUND = 3
IDS_PER_GROUP = 8
"""Every round all threads hammer the same few fresh groups of identifiers at once (so first inserts
race and merges are frequent); inputs rarely bridge groups of different rounds, so the final graph is
many clusters of different sizes, not one."""


HUB_PHONE = "5550100"
NO_GUARD = Guardrails(max_links_per_value=10**9, max_identifiers_per_identity=10**9)
SMALL_GUARD = Guardrails(max_links_per_value=5, max_identifiers_per_identity=20)


def random_round(rng: random.Random, thread: int, round_: int, hub: bool = False) -> list[Input]:
    """With `hub`, one input in five carries the same phone: a shop's till number."""
    day_zero = datetime(2023, 1, 1, tzinfo=UTC)

    def group() -> int:
        if round_ and rng.random() < 0.005:
            return rng.randrange(round_ * GROUPS_PER_ROUND)  # an older round's group
        return round_ * GROUPS_PER_ROUND + rng.randrange(GROUPS_PER_ROUND)

    inputs = []
    for n in range(INPUTS_PER_ROUND):
        home = group()
        email = f"g{home}.{rng.randrange(IDS_PER_GROUP)}@x.io" if rng.random() < 0.8 else None
        other = group() if rng.random() < 0.1 else home
        phone = (
            f"{other:04d}{rng.randrange(IDS_PER_GROUP):02d}" if rng.random() < 0.8 or email is None else None
        )
        if hub and rng.random() < 0.2:
            phone = HUB_PHONE
        # Random event times: a late older event often takes over its cluster (rule 8).
        when = day_zero + timedelta(minutes=rng.randrange(1000)) if rng.random() < 0.7 else None
        event = f"t{thread}-r{round_}-{n}"
        inputs.append(Input(Identifiers(email, phone), SOURCE, event, occurred_at=when, order_id=event))
    return inputs


def components(requests: list[Input]) -> set[frozenset[str]]:
    """The connected components of the identifiers, each input joining its email and phone."""
    return graph.components((r.identifiers.email, r.identifiers.phone) for r in requests)


def clusters(conn: psycopg.Connection[Any]) -> list[set[str]]:
    by_primary: dict[int, set[str]] = {}
    for row in contacts(conn):
        by_primary.setdefault(row.linked_id or row.id, set()).update(
            graph.identifier_keys(row.email, row.phone_number)
        )
    return list(by_primary.values())


def run_rounds(plans: list[list[list[Input]]], limits: Guardrails, url: str) -> list[Result]:
    """Each thread applies its rounds, all threads starting each round together, in random chunks."""
    seed = random.randrange(2**32)
    results: list[Result] = []

    def work(n: int, conn: psycopg.Connection[Any], barrier: threading.Barrier) -> None:
        rng = random.Random(seed - n)
        for pending in plans[n]:
            barrier.wait()
            while pending:
                size = 1 if rng.random() < 0.6 else rng.randint(2, 8)
                chunk, pending = pending[:size], pending[size:]
                results.extend(reconcile_batch(conn, chunk, limits))

    run_concurrently(THREADS, work, url)
    return results


def test_random_overlapping_inputs_from_many_threads(db: psycopg.Connection[Any], database_url: str) -> None:
    seed = random.randrange(2**32)
    plans = [
        [random_round(random.Random(seed + n * ROUNDS + r), n, r) for r in range(ROUNDS)]
        for n in range(THREADS)
    ]
    results = run_rounds(plans, NO_GUARD, database_url)
    assert all(isinstance(r, Resolution) and not r.duplicate for r in results)
    merged = sum(1 for r in results if isinstance(r, Resolution) and r.merge is not None)

    everything = [r for plan in plans for round_ in plan for r in round_]
    assert check_invariants(db, NO_GUARD) == [], f"seed {seed}"
    db.rollback()
    found = clusters(db)
    identifiers = [k for cluster in found for k in cluster]
    assert len(identifiers) == len(set(identifiers)), f"an identifier is in two clusters (seed {seed})"
    assert {frozenset(c) for c in found} == components(everything), f"seed {seed}"
    assert len(found) > 1, "the workload should leave several clusters"

    processed = table(db, "SELECT source, event_id FROM processed_event")
    assert sorted((p["source"], p["event_id"]) for p in processed) == sorted(
        (r.source, r.event_id) for r in everything
    )
    resolved = table(db, "SELECT count(*) AS n FROM outbox_event WHERE event_type = 'identity.resolved'")
    assert resolved == [{"n": len(everything)}]
    assert counts(db)["merge_log"] == merged > 0


def test_hub_values_from_many_threads_are_blocked_and_split(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    """Rules 12-15 under rule 10: a hub phone racing in from every thread ends blocked, every identity
    is one component of the link graph within the cap, and only inputs with nothing else are refused."""
    seed = random.randrange(2**32)
    plans = [
        [random_round(random.Random(seed + n * ROUNDS + r), n, r, hub=True) for r in range(ROUNDS)]
        for n in range(THREADS)
    ]
    results = run_rounds(plans, SMALL_GUARD, database_url)

    assert check_invariants(db, SMALL_GUARD) == [], f"seed {seed}"
    db.rollback()
    blocks = table(db, "SELECT kind, value FROM blocked_value")
    assert {"kind": "phone", "value": HUB_PHONE} in blocks, f"seed {seed}"
    assert table(db, "SELECT count(*) AS n FROM outbox_event WHERE event_type = 'identity.split'")[0]["n"] > 0
    refused = [r for r in results if isinstance(r, BlockedInput)]
    everything = {(r.source, r.event_id): r for plan in plans for round_ in plan for r in round_}
    blocked = {row["value"] for row in blocks}
    for r in refused:
        ids = everything[r.source, r.event_id].identifiers
        assert {ids.email, ids.phone} - {None} <= blocked


@pytest.mark.parametrize("with_phones", [False, True])
def test_concurrent_first_requests_for_one_new_email_create_one_primary(
    db: psycopg.Connection[Any], database_url: str, with_phones: bool
) -> None:
    threads, rounds = 16, 4
    answers: list[tuple[int, Resolution]] = []

    def work(n: int, conn: psycopg.Connection[Any], barrier: threading.Barrier) -> None:
        for r in range(rounds):
            barrier.wait()
            phone = f"{r}{n:04d}00" if with_phones else None
            answers.append((r, reconcile(conn, request(f"new{r}@x.io", phone, event=f"r{r}-{n}"))))

    run_concurrently(threads, work, database_url)

    rows = contacts(db)
    for r in range(rounds):
        mine = [row for row in rows if row.email == f"new{r}@x.io"]
        primaries = [row for row in mine if row.linked_id is None]
        assert len(primaries) == 1
        assert len(mine) == (threads if with_phones else 1)
        assert {row.linked_id for row in mine if row.linked_id is not None} <= {primaries[0].id}
        outcomes = Counter(a.outcome for round_, a in answers if round_ == r)
        assert outcomes[Outcome.CREATED_PRIMARY] == 1
        assert outcomes[Outcome.MERGED] == 0
    assert check_invariants(db) == []
    db.rollback()


def test_concurrent_redeliveries_of_one_event_apply_it_once(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    """Two workers can hold the same event after a rebalance: one applies it, the others see a duplicate."""
    threads = 16
    answers: list[Resolution | KeyConflict] = []

    def work(n: int, conn: psycopg.Connection[Any], _: threading.Barrier) -> None:
        # Half the copies carry a different payload under the same key: those must be refused.
        email = "same@x.io" if n % 2 else f"other{n}@x.io"
        try:
            answers.append(reconcile(conn, request(email, "111", event="redelivered")))
        except IdempotencyKeyReused as exc:
            answers.append(exc.conflict)

    run_concurrently(threads, work, database_url)

    applied = [a for a in answers if isinstance(a, Resolution) and not a.duplicate]
    assert len(applied) == 1
    winner = applied[0].contact.emails
    duplicates = [a for a in answers if isinstance(a, Resolution) and a.duplicate]
    conflicts = [a for a in answers if isinstance(a, KeyConflict)]
    assert len(duplicates) == (threads // 2 - 1 if winner == ("same@x.io",) else 0)
    assert len(duplicates) + len(conflicts) == threads - 1
    assert all(d.contact == applied[0].contact for d in duplicates)
    assert counts(db) == {"contact": 1, "processed_event": 1, "merge_log": 0, "outbox": 1}


def test_concurrent_crossed_bridges_merge_once(db: psycopg.Connection[Any], database_url: str) -> None:
    """Half the threads bridge X to Y, half Y to X: opposite lock orders, one merge, no deadlock."""
    reconcile(db, request("x@x.io", "111", event="x", when=datetime(2023, 1, 1, tzinfo=UTC)))
    reconcile(db, request("y@x.io", "222", event="y", when=datetime(2023, 1, 2, tzinfo=UTC)))
    threads = 16

    def work(n: int, conn: psycopg.Connection[Any], _: threading.Barrier) -> None:
        pair = ("x@x.io", "222") if n % 2 else ("y@x.io", "111")
        reconcile(conn, request(*pair, event=f"bridge-{n}"))

    run_concurrently(threads, work, database_url)

    assert [(m["surviving_primary_id"], m["merged_primary_ids"]) for m in merge_log(db)] == [(1, [2])]
    assert {row.id: row.linked_id for row in contacts(db)} == {1: None, 2: 1}
    assert check_invariants(db) == []
    db.rollback()


def test_primary_demoted_while_waiting_for_its_lock(db: psycopg.Connection[Any], database_url: str) -> None:
    """A merge commits while an input waits for the row lock of a primary it looked up: the input sees
    the primary linked to the winner, locks the winner too, and answers for the whole merged cluster."""
    reconcile(db, request("x@x.io", "111", event="x", when=datetime(2023, 1, 1, tzinfo=UTC)))
    reconcile(db, request("y@x.io", "222", event="y", when=datetime(2023, 1, 2, tzinfo=UTC)))
    db.commit()
    answers: list[Resolution] = []
    with psycopg.connect(database_url) as merger, psycopg.connect(database_url, autocommit=True) as waiter:
        # A concurrent merge of cluster 2 into cluster 1, holding both primaries' row locks.
        merger.execute("SELECT id FROM contact WHERE id IN (1, 2) ORDER BY id FOR NO KEY UPDATE")
        merger.execute("UPDATE contact SET linked_id = 1, link_precedence = 'secondary' WHERE id = 2")
        thread = start_until_it_waits(
            db,
            waiter,
            lambda: answers.append(reconcile(waiter, request("y@x.io", event="late"))),
            "the input should wait for primary 2's row lock",
        )
        merger.commit()
        thread.join(30)
    (answer,) = answers
    assert (answer.outcome, answer.contact.primary_id) == (Outcome.MATCHED, 1)
    assert answer.contact.emails == ("x@x.io", "y@x.io")
    assert answer.contact.secondary_ids == (2,)


def test_batch_goes_on_around_an_identifier_locked_elsewhere(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    """Inputs whose identifier another transaction holds, and later inputs sharing an identifier with
    them, wait in a second transaction; the rest of the batch commits without waiting."""
    batch = [
        request("a@x.io", event="1"),
        request("b@x.io", "111", event="2"),  # b@x.io is held by another transaction
        request("c@x.io", event="3"),
        request("d@x.io", "111", event="4"),  # shares 111 with the held input: keeps its order
        request("e@x.io", event="5"),
    ]
    answers: list[list[Result]] = []
    with psycopg.connect(database_url, autocommit=True) as holder, psycopg.connect(database_url) as conn:
        holder.execute("SELECT pg_advisory_lock(%s)", [lock_key("email", "b@x.io")])
        thread = start_until_it_waits(
            db, conn, lambda: answers.append(reconcile_batch(conn, batch)), "the held input should wait"
        )
        assert sorted(row.email or "" for row in contacts(db)) == ["a@x.io", "c@x.io", "e@x.io"]
        db.rollback()
        holder.execute("SELECT pg_advisory_unlock(%s)", [lock_key("email", "b@x.io")])
        thread.join(30)
    (results,) = answers
    outcomes = [r.outcome for r in results if isinstance(r, Resolution)]
    assert outcomes == [Outcome.CREATED_PRIMARY] * 3 + [Outcome.CREATED_SECONDARY, Outcome.CREATED_PRIMARY]
    assert [row.source_event_id for row in contacts(db)] == ["1", "3", "5", "2", "4"]
    assert check_invariants(db) == []


def test_ready_inputs_commit_and_the_others_are_left_without_waiting(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    """`reconcile_ready` is the first transaction alone: what needs a lock held elsewhere is None."""
    batch = [
        request("a@x.io", event="1"),
        request("b@x.io", "111", event="2"),  # b@x.io is held by another transaction
        request("d@x.io", "111", event="3"),  # shares 111 with the held input: keeps its order
    ]
    with psycopg.connect(database_url, autocommit=True) as holder, psycopg.connect(database_url) as conn:
        holder.execute("SELECT pg_advisory_lock(%s)", [lock_key("email", "b@x.io")])
        results = reconcile_ready(conn, batch)
    assert [type(r).__name__ for r in results] == ["Resolution", "NoneType", "NoneType"]
    assert [row.email for row in contacts(db)] == ["a@x.io"]


def test_batch_goes_on_around_a_cluster_locked_elsewhere(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    """An input whose cluster another transaction is changing (through another identifier) waits in a
    second transaction, with the later inputs of that cluster; the others commit without waiting."""
    reconcile(db, request("a@x.io", "111", event="a"))
    reconcile(db, request("b@x.io", "222", event="b"))
    db.commit()
    batch = [
        request("a@x.io", "333", event="1"),  # cluster 1, whose primary is locked elsewhere
        request("b@x.io", "444", event="2"),
        request(None, "111", event="3"),  # cluster 1 again, through another identifier
    ]
    answers: list[list[Result]] = []
    with psycopg.connect(database_url) as holder, psycopg.connect(database_url) as conn:
        holder.execute("SELECT id FROM contact WHERE id = 1 FOR NO KEY UPDATE")
        thread = start_until_it_waits(
            db,
            conn,
            lambda: answers.append(reconcile_batch(conn, batch)),
            "the input of the locked cluster should wait",
        )
        assert [row.phone_number for row in contacts(db)] == ["111", "222", "444"]
        db.rollback()
        holder.commit()
        thread.join(30)
    (results,) = answers
    assert [r.outcome for r in results if isinstance(r, Resolution)] == [
        Outcome.CREATED_SECONDARY,
        Outcome.CREATED_SECONDARY,
        Outcome.MATCHED,
    ]
    last = results[2]
    assert isinstance(last, Resolution)
    assert last.contact.phone_numbers == ("111", "333")
