"""The core against a small reference model, on random sequences of inputs.

The model is written from the rules in DESIGN.md, independently of `consumer/core/graph.py`: a plain
list of rows, a union-find over the identifiers that every input joins, and each cluster's primary
recomputed from scratch as its oldest live row. Sequences may also erase (soft-delete) whole clusters
by hand, after which their identifiers are unknown again.
Rows are identified by their creation order (the model's index, the database's rank by id), because
batches may leave gaps in the id sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.core import (
    IdempotencyKeyReused,
    KeyConflict,
    Request,
    Resolution,
    check_invariants,
    reconcile,
    reconcile_batch,
)
from consumer.normalize import Identifiers
from tests.core.helpers import contacts, execute, outbox
from tests.support import SOURCE
from tests.support.database import reset_database
from tests.support.graph import UnionFind, identifier_keys

EMAILS = ["a@x.io", "b@x.io", "c@x.io", "d@x.io"]
PHONES = ["111", "222", "333", "444"]
DAY_ZERO = datetime(2023, 4, 1, tzinfo=UTC)
NOW, FUTURE = "now", "future"
When = int | str
"""A day after DAY_ZERO, NOW (no event time: the API) or FUTURE (an event time to clamp)."""


# --- inputs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    email: str | None
    phone: str | None
    when: When


@dataclass(frozen=True)
class Replay:
    """The event of an earlier input sent again: verbatim, or with a changed payload."""

    of: int
    changed: bool
    email: str | None
    phone: str | None


@dataclass(frozen=True)
class Erase:
    """Soft-delete, by hand, the whole cluster of the live row with this rank (modulo their number)."""

    of: int


Step = Input | Replay | Erase
Planned = list[tuple[Request | None, Step]]


def identifiers() -> st.SearchStrategy[tuple[str | None, str | None]]:
    pair = st.tuples(st.none() | st.sampled_from(EMAILS), st.none() | st.sampled_from(PHONES))
    return pair.filter(lambda p: p != (None, None))


times: st.SearchStrategy[When] = st.integers(0, 6) | st.just(NOW) | st.just(FUTURE)
inputs = st.tuples(identifiers(), times).map(lambda t: Input(t[0][0], t[0][1], t[1]))
replays = st.tuples(st.integers(0, 29), st.booleans(), identifiers()).map(
    lambda t: Replay(t[0], t[1], t[2][0], t[2][1])
)
steps = st.lists(st.one_of(inputs, inputs, inputs, replays), min_size=1, max_size=30)
erasing_steps = st.lists(
    st.one_of(inputs, inputs, inputs, inputs, replays, st.integers(0, 29).map(Erase)), min_size=1, max_size=30
)


def event_time(when: When) -> datetime | None:
    if when == NOW:
        return None
    if when == FUTURE:
        return datetime.now(UTC) + timedelta(days=365)
    assert isinstance(when, int)
    return DAY_ZERO + timedelta(days=when)


def plan(sequence: Sequence[Step]) -> Planned:
    """Requests for the steps; a replay refers to an earlier input (by position among the inputs)."""
    planned: Planned = []
    sent: list[Request] = []
    for step in sequence:
        if isinstance(step, Erase):
            planned.append((None, step))
            continue
        if isinstance(step, Input):
            request = Request(
                Identifiers(step.email, step.phone),
                SOURCE,
                f"e{len(sent)}",
                occurred_at=event_time(step.when),
            )
            sent.append(request)
        elif not sent:
            continue
        else:
            request = sent[step.of % len(sent)]
            if step.changed:
                # The order id guarantees a different payload even when the identifiers are equal.
                request = Request(
                    Identifiers(step.email, step.phone), SOURCE, request.event_id, order_id="changed"
                )
        planned.append((request, step))
    return planned


# --- the reference model ----------------------------------------------------------------------------

Canon = tuple[Any, ...]
"""A result with every contact id replaced by its row's creation rank."""


@dataclass
class ModelRow:
    email: str | None
    phone: str | None
    when: When
    deleted: bool = False
    link_when_deleted: int | None = None

    def age(self, index: int) -> tuple[int, int, int]:
        # Rows without an event time (or clamped) are created "now": after every 2023 row, in order.
        if self.when in (NOW, FUTURE):
            return (1, 0, index)
        assert isinstance(self.when, int)
        return (0, self.when, index)


@dataclass
class Model:
    rows: list[ModelRow] = field(default_factory=list)
    identifiers: UnionFind = field(default_factory=UnionFind)
    """Every input joins its email and phone, so a request that bridges two clusters joins them even
    when it inserts no row."""

    def component(self, row: ModelRow) -> str:
        return self.identifiers.find(identifier_keys(row.email, row.phone)[0])

    def live(self) -> list[int]:
        return [i for i, row in enumerate(self.rows) if not row.deleted]

    def primaries(self) -> dict[int, int]:
        """The primary (oldest live row) of every live row's cluster."""
        oldest: dict[str, int] = {}
        for i in self.live():
            root = self.component(self.rows[i])
            if root not in oldest or self.rows[i].age(i) < self.rows[oldest[root]].age(oldest[root]):
                oldest[root] = i
        return {i: oldest[self.component(self.rows[i])] for i in self.live()}

    def apply(self, step: Input) -> Canon:
        before = self.primaries()
        matched = [
            i
            for i in before
            if (step.email is not None and self.rows[i].email == step.email)
            or (step.phone is not None and self.rows[i].phone == step.phone)
        ]
        touched = {before[i] for i in matched}
        members = [i for i in before if before[i] in touched]
        new = not matched or any(
            value is not None and all(getattr(self.rows[m], attr) != value for m in members)
            for attr, value in (("email", step.email), ("phone", step.phone))
        )
        self.identifiers.union(identifier_keys(step.email, step.phone))
        created = len(self.rows) if new else None
        if new:
            self.rows.append(ModelRow(step.email, step.phone, step.when))
        after = self.primaries()
        winner = after[created] if created is not None else after[matched[0]]
        demoted = sorted(p for p in touched if p != winner)
        relinked = sorted(i for i in members if before[i] in demoted and i not in touched)
        merge = (winner, tuple(demoted), tuple(relinked)) if demoted else None
        if merge:
            outcome = "merged"
        elif created is not None:
            outcome = "created_secondary" if matched else "created_primary"
        else:
            outcome = "matched"
        return (outcome, created, self.view(winner), merge, False)

    def view(self, primary: int) -> Canon:
        primaries = self.primaries()
        others = sorted(
            (i for i, p in primaries.items() if p == primary and i != primary),
            key=lambda i: self.rows[i].age(i),
        )
        ordered = [self.rows[primary], *(self.rows[i] for i in others)]
        emails = tuple(dict.fromkeys(r.email for r in ordered if r.email is not None))
        phones = tuple(dict.fromkeys(r.phone for r in ordered if r.phone is not None))
        return (primary, emails, phones, tuple(others))

    def erase(self, of: int) -> None:
        primaries = self.primaries()
        if not primaries:
            return
        target = primaries[sorted(primaries)[of % len(primaries)]]
        root = self.component(self.rows[target])
        for i, p in primaries.items():
            if p == target:
                self.rows[i].deleted = True
                self.rows[i].link_when_deleted = None if i == p else p
        # The whole cluster is gone, so are its identifiers: they may come back as a new customer.
        for key in [k for k in list(self.identifiers.parent) if self.identifiers.find(k) == root]:
            del self.identifiers.parent[key]

    def table(self) -> list[Canon]:
        primaries = self.primaries()
        links = [primaries.get(i, row.link_when_deleted) for i, row in enumerate(self.rows)]
        return [
            (
                row.email,
                row.phone,
                None if links[i] == i else links[i],
                "primary" if links[i] in (i, None) else "secondary",
                event_time(row.when) if isinstance(row.when, int) else NOW,
                row.deleted,
            )
            for i, row in enumerate(self.rows)
        ]


def expected(planned: Planned) -> tuple[list[Canon], Model]:
    model = Model()
    answers: list[Canon] = []
    first_answer: dict[str, Canon] = {}
    for request, step in planned:
        if isinstance(step, Erase):
            model.erase(step.of)
            answers.append(("erased",))
            continue
        assert request is not None
        if isinstance(step, Input):
            answer = model.apply(step)
            first_answer[request.event_id] = answer
        elif step.changed:
            answer = ("conflict", request.source, request.event_id)
        else:
            answer = (*first_answer[request.event_id][:4], True)
        answers.append(answer)
    return answers, model


# --- the database side ------------------------------------------------------------------------------


def ranks(conn: psycopg.Connection[Any]) -> dict[int, int]:
    return {row.id: rank for rank, row in enumerate(contacts(conn))}


def canon(result: Resolution | KeyConflict, rank: dict[int, int]) -> Canon:
    if isinstance(result, KeyConflict):
        return ("conflict", result.source, result.event_id)
    view = result.contact
    merge = result.merge
    return (
        result.outcome.value,
        None if result.contact_id is None else rank[result.contact_id],
        (rank[view.primary_id], view.emails, view.phone_numbers, tuple(rank[i] for i in view.secondary_ids)),
        None
        if merge is None
        else (
            rank[merge.surviving_primary_id],
            tuple(rank[i] for i in merge.merged_primary_ids),
            tuple(rank[i] for i in merge.relinked_contact_ids),
        ),
        result.duplicate,
    )


def table(conn: psycopg.Connection[Any]) -> list[Canon]:
    rows = contacts(conn)
    rank = {row.id: n for n, row in enumerate(rows)}
    return [
        (
            r.email,
            r.phone_number,
            None if r.linked_id is None else rank[r.linked_id],
            r.link_precedence,
            r.created_at if r.created_at < DAY_ZERO + timedelta(days=365) else NOW,
            r.deleted_at is not None,
        )
        for r in rows
    ]


def canon_outbox(conn: psycopg.Connection[Any]) -> list[Canon]:
    """The outbox rows with contact ids as ranks and without processing times."""
    rank = ranks(conn)
    ids = ("contactId", "primaryContatctId", "primaryContactId", "survivingPrimaryId")
    lists = ("secondaryContactIds", "mergedPrimaryIds", "relinkedContactIds")

    def ranked(data: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict):
                out[key] = ranked(value)
            elif key in ids and value is not None:
                out[key] = rank[value]
            elif key in lists:
                out[key] = [rank[v] for v in value]
            else:
                out[key] = value
        return out

    return [
        (
            row["event_type"],
            rank[int(row["message_key"])],
            row["payload"]["id"],
            ranked(row["payload"]["data"]),
        )
        for row in outbox(conn)
    ]


def erase(conn: psycopg.Connection[Any], of: int) -> None:
    live = [row.id for row in contacts(conn) if row.deleted_at is None]
    if live:
        execute(
            conn,
            "UPDATE contact SET deleted_at = now() WHERE deleted_at IS NULL"
            " AND coalesce(linked_id, id) = (SELECT coalesce(linked_id, id) FROM contact WHERE id = %s)",
            (live[of % len(live)],),
        )


def one_by_one(
    conn: psycopg.Connection[Any],
    planned: Planned,
    each: Callable[[int, Resolution | KeyConflict], None] = lambda n, r: None,
) -> list[Resolution | KeyConflict]:
    """The results of the reconciling steps; `each` sees them with their position in `planned`."""
    results: list[Resolution | KeyConflict] = []
    for n, (request, step) in enumerate(planned):
        if isinstance(step, Erase):
            erase(conn, step.of)
            continue
        assert request is not None
        try:
            result: Resolution | KeyConflict = reconcile(conn, request)
        except IdempotencyKeyReused as exc:
            result = exc.conflict
        results.append(result)
        each(n, result)
    return results


@pytest.fixture(scope="module")
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url) as connection:
        yield connection


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(sequence=erasing_steps)
def test_one_by_one_agrees_with_the_model(conn: psycopg.Connection[Any], sequence: list[Step]) -> None:
    reset_database(conn)
    planned = plan(sequence)
    answers, model = expected(planned)
    updated: dict[int, datetime] = {}

    def check(n: int, result: Resolution | KeyConflict) -> None:
        rows = contacts(conn)
        rank = {row.id: i for i, row in enumerate(rows)}
        assert [row.id for row in rows] == list(range(1, len(rows) + 1)), "one id per row, no gaps"
        assert canon(result, rank) == answers[n], f"step {n}: {planned[n][1]}"
        assert check_invariants(conn) == []
        conn.rollback()
        # updated_at moves exactly on the rows a merge relinked (rule 7).
        changed = {rank[r.id] for r in rows if r.id in updated and r.updated_at != updated[r.id]}
        merge = answers[n][3] if answers[n][0] != "conflict" and not answers[n][4] else None
        assert changed == (set(merge[1]) | set(merge[2]) if merge else set())
        updated.update((r.id, r.updated_at) for r in rows)

    one_by_one(conn, planned, check)

    assert table(conn) == model.table()
    fresh = [a for a in answers if a[0] not in ("conflict", "erased") and not a[-1]]
    resolved = [o for o in canon_outbox(conn) if o[0] == "identity.resolved"]
    assert len(resolved) == len(fresh), "one identity.resolved per processed event"
    assert len(canon_outbox(conn)) - len(resolved) == sum(1 for a in fresh if a[3] is not None)


@FAST
@given(sequence=steps, chunks=st.lists(st.integers(1, 8), max_size=8))
def test_batches_agree_with_one_by_one(
    conn: psycopg.Connection[Any], sequence: list[Step], chunks: list[int]
) -> None:
    """Chunked by `chunks` (the rest in one final batch; no chunks means one batch for everything)."""
    planned = plan(sequence)
    answers, model = expected(planned)

    reset_database(conn)
    singles = one_by_one(conn, planned)
    single_rank = ranks(conn)
    single_table, single_outbox = table(conn), canon_outbox(conn)

    reset_database(conn)
    batched: list[Resolution | KeyConflict] = []
    start = 0
    for size in [*chunks, len(planned)]:
        if start < len(planned):
            chunk = [request for request, _ in planned[start : start + size] if request is not None]
            batched.extend(reconcile_batch(conn, chunk))
            assert check_invariants(conn) == []
            conn.rollback()
        start += size
    batch_rank = ranks(conn)

    assert [canon(r, batch_rank) for r in batched] == [canon(r, single_rank) for r in singles] == answers
    assert table(conn) == single_table == model.table()
    assert canon_outbox(conn) == single_outbox
