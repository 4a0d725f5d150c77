"""The core against a small reference model, on random sequences of inputs.

The model is written from the rules in DESIGN.md, independently of `consumer/core/graph.py`: a plain
list of rows, a union-find over the identifiers that every input joins, and each cluster's primary
recomputed from scratch as its oldest live row. Sequences may also erase (soft-delete) whole clusters
by hand, after which their identifiers are unknown again.
Rows are identified by their creation order (the model's index, the database's rank by id), because
batches may leave gaps in the id sequence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from consumer.contract import SPLIT_TYPE
from consumer.core import (
    BlockedInput,
    Guardrails,
    IdempotencyKeyReused,
    IdentifiersBlocked,
    Input,
    KeyConflict,
    Result,
    check_invariants,
    reconcile,
    reconcile_batch,
)
from consumer.core.events import EVENT_SOURCE, output_event_id
from consumer.normalize import Identifiers
from tests.core.helpers import contacts, execute, outbox
from tests.core.helpers import table as table_rows
from tests.support import SOURCE
from tests.support.database import reset_database
from tests.support.graph import UnionFind

EMAILS = ["a@x.io", "b@x.io", "c@x.io", "d@x.io"]
PHONES = ["111", "222", "333", "444"]
DAY_ZERO = datetime(2023, 4, 1, tzinfo=UTC)
NOW, FUTURE = "now", "future"
When = int | str
"""A day after DAY_ZERO, NOW (no event time: the API) or FUTURE (an event time to clamp)."""


# --- inputs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkout:
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


Step = Checkout | Replay | Erase
Planned = list[tuple[Input | None, Step]]


def identifiers() -> st.SearchStrategy[tuple[str | None, str | None]]:
    pair = st.tuples(st.none() | st.sampled_from(EMAILS), st.none() | st.sampled_from(PHONES))
    return pair.filter(lambda p: p != (None, None))


times: st.SearchStrategy[When] = st.integers(0, 6) | st.just(NOW) | st.just(FUTURE)
inputs = st.tuples(identifiers(), times).map(lambda t: Checkout(t[0][0], t[0][1], t[1]))
replays = st.tuples(st.integers(0, 29), st.booleans(), identifiers()).map(
    lambda t: Replay(t[0], t[1], t[2][0], t[2][1])
)
# Checkouts that share the first phone or the first email: hubs, for the guardrails (rules 13-14).
hub_inputs = st.tuples(st.sampled_from(EMAILS), st.sampled_from(PHONES), times, st.booleans()).map(
    lambda t: Checkout(t[0], PHONES[0], t[2]) if t[3] else Checkout(EMAILS[0], t[1], t[2])
)
steps = st.lists(st.one_of(inputs, inputs, hub_inputs, hub_inputs, replays), min_size=8, max_size=30)
erasing_steps = st.lists(
    st.one_of(inputs, inputs, hub_inputs, hub_inputs, replays, st.integers(0, 29).map(Erase)),
    min_size=8,
    max_size=30,
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
    sent: list[Input] = []
    for step in sequence:
        if isinstance(step, Erase):
            planned.append((None, step))
            continue
        if isinstance(step, Checkout):
            request = Input(
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
                request = Input(
                    Identifiers(step.email, step.phone), SOURCE, request.event_id, order_id="changed"
                )
        planned.append((request, step))
    return planned


# --- the reference model ----------------------------------------------------------------------------

Canon = tuple[Any, ...]
"""A result with every contact id replaced by its row's creation rank."""
Value = tuple[str, str]
BLOCKED: Canon = ("blocked",)


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

    def values(self) -> list[Value]:
        return [(kind, v) for kind, v in (("email", self.email), ("phone", self.phone)) if v is not None]


@dataclass
class Model:
    """Identities recomputed from scratch at every step as the components of the link graph."""

    limits: Guardrails
    rows: list[ModelRow] = field(default_factory=list)
    blocked: set[Value] = field(default_factory=set)
    bridges: list[tuple[str, str]] = field(default_factory=list)
    """The email and phone of every input that merged identities: a link even where no row holds both."""
    splits: int = 0
    changed: set[int] = field(default_factory=set)
    """Rows relinked by the current step."""

    def live(self) -> list[int]:
        return [i for i, row in enumerate(self.rows) if not row.deleted]

    def holders(self, value: Value) -> list[int]:
        return [i for i in self.live() if value in self.rows[i].values()]

    def primaries(self) -> dict[int, int]:
        """The primary (oldest live row) of every live row's component."""
        links = UnionFind()
        for i in self.live():
            shared = [f"{k}:{v}" for k, v in self.rows[i].values() if (k, v) not in self.blocked]
            links.union([str(i), *shared])
        for email, phone in self.bridges:
            bridged = [("email", email), ("phone", phone)]
            if not set(bridged) & self.blocked and all(self.holders(v) for v in bridged):
                links.union([f"{k}:{v}" for k, v in bridged])
        oldest: dict[str, int] = {}
        for i in self.live():
            root = links.find(str(i))
            if root not in oldest or self.rows[i].age(i) < self.rows[oldest[root]].age(oldest[root]):
                oldest[root] = i
        return {i: oldest[links.find(str(i))] for i in self.live()}

    def admitted(self, email: str | None, phone: str | None) -> tuple[str | None, str | None]:
        return (
            None if ("email", email) in self.blocked else email,
            None if ("phone", phone) in self.blocked else phone,
        )

    def block(self, value: Value) -> None:
        before = self.primaries()
        identities = {before[i] for i in self.holders(value)}
        self.blocked.add(value)
        after = self.primaries()
        self.splits += sum(len({after[i] for i in before if before[i] == p}) > 1 for p in identities)
        self.changed |= {i for i in before if before[i] != after[i]}

    def fans_out(self, value: Value, other: str) -> bool:
        other_kind = "email" if value[0] == "phone" else "phone"
        counterparts = {other} | {
            v for i in self.holders(value) for k, v in self.rows[i].values() if k == other_kind
        }
        return (
            len(counterparts - {v for k, v in self.blocked if k == other_kind})
            > self.limits.max_links_per_value
        )

    def over_cap(self, email: str | None, phone: str | None) -> Value | None:
        primaries = self.primaries()
        matched = {primaries[i] for v in (("email", email), ("phone", phone)) for i in self.holders(v)}  # type: ignore[arg-type]
        rows = [self.rows[i] for i in primaries if primaries[i] in matched]
        live = {v for r in rows for v in r.values() if v not in self.blocked}
        incoming = {v for v in (("email", email), ("phone", phone)) if v[1] is not None}
        if len(live | incoming) <= self.limits.max_identifiers_per_identity:
            return None
        counterparts: dict[Value, set[Value]] = {v: set() for v in live}
        for r in rows:
            if len(values := [v for v in r.values() if v in live]) == 2:
                counterparts[values[0]].add(values[1])
                counterparts[values[1]].add(values[0])
        return min(live, key=lambda v: (-len(counterparts[v]), v[1], v[0]))

    def apply(self, email: str | None, phone: str | None, when: When) -> Canon:
        email, phone = self.admitted(email, phone)
        if email is not None and phone is not None:
            for value in [
                v
                for v, other in ((("phone", phone), email), (("email", email), phone))
                if self.fans_out(v, other)
            ]:
                self.block(value)
            email, phone = self.admitted(email, phone)
        while (email is not None or phone is not None) and (victim := self.over_cap(email, phone)):
            self.block(victim)
            email, phone = self.admitted(email, phone)
        if email is None and phone is None:
            return BLOCKED
        before = self.primaries()
        matched = [
            i
            for i in before
            if (email is not None and self.rows[i].email == email)
            or (phone is not None and self.rows[i].phone == phone)
        ]
        touched = {before[i] for i in matched}
        members = [i for i in before if before[i] in touched]
        row = ModelRow(email, phone, when)
        new = (
            not matched
            or any(
                value is not None and all(getattr(self.rows[m], attr) != value for m in members)
                for attr, value in (("email", email), ("phone", phone))
            )
            # Rule 8: an event older than every row it matches keeps its row.
            or all(row.age(len(self.rows))[:2] < self.rows[m].age(m)[:2] for m in matched)
        )
        created = len(self.rows) if new else None
        if new:
            self.rows.append(row)
        if len(touched) > 1:
            assert email is not None
            assert phone is not None
            self.bridges.append((email, phone))
        after = self.primaries()
        winner = after[created] if created is not None else after[matched[0]]
        demoted = sorted(p for p in touched if p != winner)
        relinked = sorted(i for i in members if before[i] in demoted and i not in touched)
        merge = (winner, tuple(demoted), tuple(relinked)) if demoted else None
        self.changed |= {i for i in before if before[i] != after[i]}
        if merge:
            outcome = "merged"
        elif created is not None:
            outcome = "created_secondary" if matched else "created_primary"
        else:
            outcome = "matched"
        return (outcome, created, self.view(winner), merge, False)

    def current_view(self, email: str | None, phone: str | None, stored_primary: int) -> Canon:
        """A replay's identity now: the one holding its email, else its phone, else an empty view."""
        primaries = self.primaries()
        for value in (("email", email), ("phone", phone)):
            if holders := self.holders(value):  # type: ignore[arg-type]
                return self.view(primaries[min(holders)])
        return (stored_primary, (), (), ())

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
        """Soft-delete a whole identity, and forget the merges of its values (erasure does)."""
        primaries = self.primaries()
        if not primaries:
            return
        target = primaries[sorted(primaries)[of % len(primaries)]]
        gone: set[Value] = set()
        for i, p in primaries.items():
            if p == target:
                self.rows[i].deleted = True
                self.rows[i].link_when_deleted = None if i == p else p
                gone.update(self.rows[i].values())
        self.bridges = [b for b in self.bridges if not {("email", b[0]), ("phone", b[1])} & gone]

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


@dataclass
class Expected:
    answers: list[Canon]
    changed: list[set[int]]
    """The rows each step relinked (their updated_at moves)."""
    model: Model


def expected(planned: Planned, limits: Guardrails) -> Expected:
    model = Model(limits)
    answers: list[Canon] = []
    changed: list[set[int]] = []
    first: dict[str, tuple[Input, Canon]] = {}
    whens: dict[str, When] = {}
    for request, step in planned:
        model.changed = set()
        if isinstance(step, Erase):
            model.erase(step.of)
            answers.append(("erased",))
            changed.append(set())
            continue
        assert request is not None
        ids = request.identifiers
        recorded = first.get(request.event_id)
        if isinstance(step, Checkout):
            whens[request.event_id] = step.when
        if recorded is None:
            when = whens[request.event_id] if request.occurred_at is not None else NOW
            answer = model.apply(ids.email, ids.phone, when)
            if answer != BLOCKED:  # a blocked input is not recorded: it can be replayed after an unblock
                first[request.event_id] = (request, answer)
        elif recorded[0].fingerprint != request.fingerprint:
            answer = ("conflict", request.source, request.event_id)
        else:
            stored = recorded[1]
            answer = (*stored[:2], model.current_view(ids.email, ids.phone, stored[2][0]), stored[3], True)
        answers.append(answer)
        changed.append(model.changed)
    return Expected(answers, changed, model)


# --- the database side ------------------------------------------------------------------------------


def ranks(conn: psycopg.Connection[Any]) -> dict[int, int]:
    return {row.id: rank for rank, row in enumerate(contacts(conn))}


def canon(result: Result, rank: dict[int, int]) -> Canon:
    if isinstance(result, KeyConflict):
        return ("conflict", result.source, result.event_id)
    if isinstance(result, BlockedInput):
        return BLOCKED
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
    ids = ("contactId", "primaryContatctId", "primaryContactId", "survivingPrimaryId", "formerPrimaryId")
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
            elif key == "identities":
                out[key] = [ranked(v) for v in value]
            else:
                out[key] = value
        return out

    def event_id(row: dict[str, Any]) -> str:
        """A split's id derives from raw contact ids, which differ between runs: checked, then ranked."""
        payload = row["payload"]
        if row["event_type"] != "identity.split":
            return str(payload["id"])
        cause = payload["data"]["cause"]
        source = f"{EVENT_SOURCE}:{cause['type']}"
        assert payload["id"] == output_event_id(source, f"{cause['id']}:{row['message_key']}", SPLIT_TYPE)
        return f"split of {rank[int(row['message_key'])]} by {cause['id']}"

    return [
        (row["event_type"], rank[int(row["message_key"])], event_id(row), ranked(row["payload"]["data"]))
        for row in outbox(conn)
    ]


def erase(conn: psycopg.Connection[Any], of: int) -> None:
    """Soft-delete a whole identity by hand, and forget the merges of its values as erasure does."""
    live = [row.id for row in contacts(conn) if row.deleted_at is None]
    if live:
        execute(
            conn,
            "WITH gone AS (UPDATE contact SET deleted_at = now() WHERE deleted_at IS NULL"
            " AND coalesce(linked_id, id) = (SELECT coalesce(linked_id, id) FROM contact WHERE id = %s)"
            " RETURNING email, phone_number)"
            " DELETE FROM merge_log WHERE email IN (SELECT email FROM gone)"
            " OR phone_number IN (SELECT phone_number FROM gone)",
            (live[of % len(live)],),
        )


def one_by_one(
    conn: psycopg.Connection[Any],
    planned: Planned,
    limits: Guardrails,
    each: Callable[[int, Result], None] = lambda n, r: None,
) -> list[Result]:
    """The results of the reconciling steps; `each` sees them with their position in `planned`."""
    results: list[Result] = []
    for n, (request, step) in enumerate(planned):
        if isinstance(step, Erase):
            erase(conn, step.of)
            continue
        assert request is not None
        try:
            result: Result = reconcile(conn, request, limits)
        except IdempotencyKeyReused as exc:
            result = exc.conflict
        except IdentifiersBlocked as exc:
            result = exc.blocked
        results.append(result)
        each(n, result)
    return results


@pytest.fixture(scope="module")
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url) as connection:
        yield connection


def blocks(conn: psycopg.Connection[Any]) -> list[Canon]:
    return [
        tuple(row.values())
        for row in table_rows(conn, "SELECT id, kind, value, reason FROM blocked_value ORDER BY id")
    ]


# The default limits never trip on these few values; the small ones make hubs of most sequences.
LIMITS = pytest.mark.parametrize(
    "limits",
    [Guardrails(), Guardrails(max_links_per_value=2, max_identifiers_per_identity=5)],
    ids=["default-limits", "small-limits"],
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@LIMITS
@given(sequence=erasing_steps)
def test_one_by_one_agrees_with_the_model(
    conn: psycopg.Connection[Any], limits: Guardrails, sequence: list[Step]
) -> None:
    reset_database(conn)
    planned = plan(sequence)
    note(f"SEQ {sequence}")
    want = expected(planned, limits)
    updated: dict[int, datetime] = {}

    def check(n: int, result: Result) -> None:
        rows = contacts(conn)
        rank = {row.id: i for i, row in enumerate(rows)}
        assert canon(result, rank) == want.answers[n], f"step {n}: {planned[n][1]}"
        assert check_invariants(conn, limits) == []
        conn.rollback()
        # updated_at moves exactly on the rows a merge or a split relinked (rules 7 and 15).
        changed = {rank[r.id] for r in rows if r.id in updated and r.updated_at != updated[r.id]}
        assert changed == want.changed[n]
        updated.update((r.id, r.updated_at) for r in rows)

    one_by_one(conn, planned, limits, check)

    assert table(conn) == want.model.table()
    fresh = [a for a in want.answers if a[0] not in ("conflict", "erased", "blocked") and not a[-1]]
    events = Counter(o[0] for o in canon_outbox(conn))
    assert events["identity.resolved"] == len(fresh), "one identity.resolved per processed event"
    assert events["identity.merged"] == sum(1 for a in fresh if a[3] is not None)
    assert events["identity.split"] == want.model.splits


@FAST
@LIMITS
@given(sequence=steps, chunks=st.lists(st.integers(1, 8), max_size=8))
def test_batches_agree_with_one_by_one(
    conn: psycopg.Connection[Any], limits: Guardrails, sequence: list[Step], chunks: list[int]
) -> None:
    """Chunked by `chunks` (the rest in one final batch; no chunks means one batch for everything).

    The same inputs in the same order give the same blocks, splits and primaries however they are
    batched."""
    planned = plan(sequence)
    want = expected(planned, limits)

    reset_database(conn)
    singles = one_by_one(conn, planned, limits)
    single_rank = ranks(conn)
    single_table, single_outbox, single_blocks = table(conn), canon_outbox(conn), blocks(conn)

    reset_database(conn)
    batched: list[Result] = []
    start = 0
    for size in [*chunks, len(planned)]:
        if start < len(planned):
            chunk = [request for request, _ in planned[start : start + size] if request is not None]
            batched.extend(reconcile_batch(conn, chunk, limits))
            assert check_invariants(conn, limits) == []
            conn.rollback()
        start += size
    batch_rank = ranks(conn)

    assert [canon(r, batch_rank) for r in batched] == [canon(r, single_rank) for r in singles] == want.answers
    assert table(conn) == single_table == want.model.table()
    assert canon_outbox(conn) == single_outbox
    assert blocks(conn) == single_blocks
