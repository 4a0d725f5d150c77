"""Reconcile inputs into the contact graph inside one PostgreSQL transaction (rules 1-11).

Concurrency (rule 10) is handled by locking, in one global order, everything an input can touch:
first advisory locks on the hashed idempotency keys and normalized identifiers (sorted), then row locks
on the primaries of the matching clusters (sorted by id). A cluster only changes under its primary's
row lock, so once every matching primary is locked the clusters are stable. A primary that appears
only after the first round (a concurrent merge moved it) is locked with NOWAIT; if that fails the
transaction restarts with it in the first round, so no transaction ever waits out of order.

A batch first only tries its locks (advisory try-locks, then SKIP LOCKED on the primaries): the
inputs that touch something another transaction holds wait for a second transaction, which takes its
locks as above, rather than the whole batch waiting (see `reconcile_batch`). A transaction that never
waits cannot be part of a deadlock, whatever order it locks in.

An input's value known to be blocked (a junk value, or one an API process's cache holds) links nothing:
neither it nor the identities holding it are locked, and the block is read again under the row locks
(`Transaction._lock`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg import errors

from consumer import queries
from consumer.contract import ContactPayload, Outcome
from consumer.core.blocklist import Blocklist, Guardrails, lock_key
from consumer.core.events import OutboxEvent, outbox_events, split_event
from consumer.core.graph import Contact, ContactView, IdentityGraph, Merge
from consumer.core.guard import Guard
from consumer.core.links import Kind, values_of
from consumer.normalize import Identifiers

_MAX_ATTEMPTS = 10
DEFAULT_GUARDRAILS = Guardrails()
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Input:
    """One input: the normalized identifiers and where they came from."""

    identifiers: Identifiers
    source: str
    event_id: str
    occurred_at: datetime | None = None
    """Creation time for a row this input inserts (rule 8), clamped to now; None means now."""
    order_id: str | None = None
    publish_unchanged: bool = True
    """Publish `identity.resolved` even when nothing changed (events do; API calls do not)."""
    idempotent: bool = True
    """Record (source, event_id) so a replay changes nothing. False for an input nobody can retry (an
    API call without an Idempotency-Key): `event_id` then only names the provenance of its rows."""
    keeps_answer: bool = False
    """Store the identity answered, so a replay answers it again (API calls). Otherwise a replay answers
    the identity as it is then, and the stored record stays small whatever the identity's size."""

    @property
    def fingerprint(self) -> bytes:
        ids = self.identifiers
        return hashlib.sha256(orjson.dumps([ids.email, ids.phone, self.order_id])).digest()


@dataclass(frozen=True, slots=True)
class Resolution:
    outcome: Outcome
    contact_id: int | None
    contact: ContactView
    merge: Merge | None
    duplicate: bool = False
    """True when the (source, id) was processed before: this is the first answer, nothing was applied."""

    def to_json(self, keep_answer: bool) -> dict[str, Any]:
        """The stored answer: ids, and the identity's values only when `keep_answer`."""
        merge = self.merge
        stored: dict[str, Any] = {
            "outcome": self.outcome,  # a StrEnum: orjson writes its value
            "contactId": self.contact_id,
            "primaryId": self.contact.primary_id,
            "merge": None
            if merge is None
            else [
                merge.surviving_primary_id,
                list(merge.merged_primary_ids),
                list(merge.relinked_contact_ids),
            ],
        }
        if keep_answer:
            stored["contact"] = self.contact.document()
        return stored

    @classmethod
    def from_json(cls, data: dict[str, Any], current: Callable[[int], ContactView]) -> Resolution:
        """A replay's answer: the stored identity if kept, else `current(primary id)`, the identity now."""
        merge = data["merge"]
        if "contact" in data:
            kept = ContactPayload.model_validate(data["contact"])
            contact = ContactView(
                kept.primaryContactId,
                tuple(kept.emails),
                tuple(kept.phoneNumbers),
                tuple(kept.secondaryContactIds),
            )
        else:
            contact = current(data["primaryId"])
        return cls(
            outcome=Outcome(data["outcome"]),
            contact_id=data["contactId"],
            contact=contact,
            merge=None if merge is None else Merge(merge[0], tuple(merge[1]), tuple(merge[2])),
            duplicate=True,
        )


@dataclass(frozen=True, slots=True)
class KeyConflict:
    """The (source, id) was processed before with a different payload: nothing was applied."""

    source: str
    event_id: str


@dataclass(frozen=True, slots=True)
class BlockedInput:
    """Every identifier of the input is blocked (rule 12): nothing was applied, and nothing recorded, so
    the same input can be replayed after an unblock."""

    source: str
    event_id: str


Result = Resolution | KeyConflict | BlockedInput


class IdentifiersBlocked(Exception):
    def __init__(self, blocked: BlockedInput) -> None:
        super().__init__("every identifier of the input is blocked")
        self.blocked = blocked


class IdempotencyKeyReused(Exception):
    def __init__(self, conflict: KeyConflict) -> None:
        super().__init__(f"idempotency key {conflict.event_id!r} was already used with a different payload")
        self.conflict = conflict


def reconcile(
    conn: psycopg.Connection[Any], request: Input, guard: Guardrails = DEFAULT_GUARDRAILS
) -> Resolution:
    """Apply one input in its own transaction; raises `IdempotencyKeyReused` on a conflicting replay and
    `IdentifiersBlocked` when all its identifiers are blocked."""
    (result,) = reconcile_batch(conn, [request], guard)
    if isinstance(result, KeyConflict):
        raise IdempotencyKeyReused(result)
    if isinstance(result, BlockedInput):
        raise IdentifiersBlocked(result)
    return result


def reconcile_batch(
    conn: psycopg.Connection[Any], requests: Sequence[Input], guard: Guardrails = DEFAULT_GUARDRAILS
) -> list[Result]:
    """Apply many inputs, with the same results as applying them one by one in order.

    Usually one transaction. Inputs touching an identifier or a cluster another transaction has locked,
    with every later input sharing an identifier, an idempotency key or a cluster with them, go to a
    second transaction that waits for those locks, instead of holding up the whole batch: inputs that
    share something keep their order, and independent ones commute. Each transaction commits the
    contacts, the processed-event records, the merge log, the blocks and splits (rules 13-15) and the
    outbox rows of its inputs together.
    `conn` must not be inside a transaction: this function owns it, and restarts it when needed.
    """
    results = reconcile_ready(conn, requests, guard)
    while left := [i for i, result in enumerate(results) if result is None]:
        pending = [requests[i] for i in left]
        for i, result in zip(left, _transaction(conn, Transaction.run, pending, guard, True), strict=True):
            results[i] = result
    return [result for result in results if result is not None]


def reconcile_ready(
    conn: psycopg.Connection[Any], requests: Sequence[Input], guard: Guardrails = DEFAULT_GUARDRAILS
) -> list[Result | None]:
    """`reconcile_batch`'s first transaction alone: it never waits for a lock. Inputs touching an
    identifier or a cluster another transaction holds, with every later input sharing an identifier, an
    idempotency key or a cluster with them, are left: None. `reconcile_batch` applies them, waiting.

    For a caller with more inputs coming (the API): the inputs that can go on now never queue behind
    one that waits. `conn` must not be inside a transaction.
    """
    _check_idle(conn)
    return _transaction(conn, Transaction.run, requests, guard, False)


def with_identities(
    conn: psycopg.Connection[Any],
    identifiers: Sequence[Identifiers],
    guard: Guardrails,
    work: Callable[[Transaction], T],
) -> T:
    """Run `work` in one transaction holding the locks of `identifiers` and of every identity holding
    them (waiting for them in the global order), with those identities loaded; then write its changes.

    For operations that are not inputs (blocks, unblocks, erasures): they change identities under the
    same locks as reconciliation, so they are safe against any worker or API call at the same moment.
    Inside a transaction of the caller's, this one is a savepoint of it.
    """
    requests = [Input(ids, source="", event_id="", idempotent=False) for ids in identifiers]

    def body(tx: Transaction, extra: set[int], wait: bool) -> T:
        tx.lock_all(extra)
        result = work(tx)
        tx.write()
        return result

    return _transaction(conn, body, requests, guard, True)


def _check_idle(conn: psycopg.Connection[Any]) -> None:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("the core needs a connection outside any transaction")


def _transaction(
    conn: psycopg.Connection[Any],
    body: Callable[[Transaction, set[int], bool], T],
    requests: Sequence[Input],
    guard: Guardrails,
    wait: bool,
) -> T:
    """One transaction running `body`, restarted when it must."""
    extra_primaries: set[int] = set()
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            with _pipelined_transaction(conn):
                return body(Transaction(conn, requests, guard), extra_primaries, wait)
        except _PrimaryBusy as exc:
            if attempt == _MAX_ATTEMPTS:
                # An OperationalError like any lock timeout: callers retry it or answer 503.
                raise exc.error from None
            # Rare (a merge raced the lookup): the restart waits for that primary in the global order.
            extra_primaries |= exc.primaries
            wait = True
        except (errors.DeadlockDetected, errors.SerializationFailure) as conflict:
            # Blocks take a value's lock out of the global order (rules 13-14): rare, and retried.
            # (Not `exc` again: compiled, a name keeps the type of its first binding, `_PrimaryBusy`.)
            if attempt == _MAX_ATTEMPTS:
                raise
            if isinstance(conflict, _StaleBlock):  # the retry trusts no cache: it locks what it must at once
                guard = replace(guard, blocked_cache=None)
    raise AssertionError("unreachable: the last attempt returns or raises")


@contextmanager
def _pipelined_transaction(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A transaction in pipeline mode: statements that do not need each other's results share one
    round trip, so a transaction costs three whatever its size (locks, more locks, writes and commit).

    `BEGIN` goes with the first statements and `COMMIT` with the last ones: psycopg's `transaction()`
    would sync after the one and before the other, and the pipeline's exit once more, three round trips
    more. Inside a transaction of the caller's, this one is a savepoint of it, through `transaction()`.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with conn.pipeline(), conn.transaction():
            yield
        return
    switched = not conn.autocommit  # the BEGIN is this function's, not psycopg's
    if switched:
        conn.autocommit = True
    try:
        with conn.pipeline():
            conn.execute(queries.BEGIN)
            conn.execute(queries.PREFER_INDEXES, [True])
            yield
            conn.execute(queries.COMMIT)
    except BaseException:
        if conn.info.transaction_status in _OPEN:  # not if the connection is lost
            # Not a ROLLBACK statement: psycopg's rollback() also forgets the statements it prepared
            # in this pipeline, which the server skipped after the error.
            conn.rollback()
        raise
    finally:
        if switched and not conn.broken:
            conn.autocommit = False


_OPEN = (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR)


def contact_view(conn: psycopg.Connection[Any], contact_id: int) -> ContactView | None:
    """The consolidated identity of the cluster holding `contact_id`, or None if unknown or deleted."""
    with conn.transaction():
        conn.execute(queries.PREFER_INDEXES, [True])
        rows = [Contact(*row) for row in conn.execute(queries.CLUSTER_OF_CONTACT, [contact_id])]
    primaries = {row.primary_id for row in rows}
    graph = IdentityGraph.of(rows)
    if len(primaries) != 1 or (primary := primaries.pop()) not in graph.rows:
        return None
    return graph.view(primary)


class _PrimaryBusy(Exception):
    def __init__(self, primaries: set[int], error: errors.LockNotAvailable) -> None:
        self.primaries = primaries
        self.error = error


class _StaleBlock(errors.SerializationFailure):
    """A value the cache said was blocked is not any more (another process unblocked it): the
    transaction read something a concurrent one changed, a serialization failure like any other."""


class Transaction:
    """One transaction's work: lock, load the identities, apply inputs or operations, write it all."""

    def __init__(self, conn: psycopg.Connection[Any], requests: Sequence[Input], guard: Guardrails) -> None:
        self.conn = conn
        self.requests = requests
        self.limits = guard
        self.blocklist = Blocklist(conn, guard)
        # Set once the identities are loaded (`_load_clusters`).
        self.graph: IdentityGraph
        self.now: datetime
        self.time: str
        """`now` as the output events' `time` attribute, formatted once (a microsecond per event)."""
        self.guard: Guard
        self.created_by: dict[int, Input] = {}
        self.merges: list[dict[str, object]] = []
        self.splits: list[dict[str, object]] = []
        self.processed: list[dict[str, object]] = []
        self.outbox: list[OutboxEvent] = []
        self._records: list[tuple[Any, ...]] = []
        """The processed-event records of the inputs, and maybe of other keys: match them by their whole
        key (`_lock`, `queries.PROCESSED_EVENTS`). Each is (source, event id, digest, result)."""
        self._free_ids: list[int] = []
        self._new_rows = 0
        """How many rows the inputs going on may insert: contact ids fetched with the clock (`_lock`)."""
        self._ids_wanted = 0
        """How many inputs are left to apply: the size of the next block of contact ids fetched."""
        self._known: set[tuple[Kind, str]] = set()
        """The values of the inputs going on that live rows held when looked up."""
        self._skipped: set[tuple[Kind, str]] = set()
        """The inputs' values known to be blocked: neither locked nor looked up (see `_lock`)."""
        self._values = [_values(r) for r in requests]
        """Each input's values, with their kinds (asked for several times per input)."""

    def run(self, extra_primaries: set[int], wait: bool) -> list[Result | None]:
        """Apply the inputs that can go on now; None for those left for the next transaction."""
        ready = self._lock(extra_primaries, wait, inputs=True)
        requests = [r for r, go in zip(self.requests, ready, strict=True) if go]
        if not requests:
            return [None] * len(ready)
        self._ids_wanted = len(requests)
        seen: dict[tuple[str, str], tuple[bytes, dict[str, Any]]] = {
            (source, event_id): (bytes(digest), result) for source, event_id, digest, result in self._records
        }
        results = [self._apply(request, seen) for request in requests]
        self.write()
        answers = iter(results)
        return [next(answers) if go else None for go in ready]

    def lock_all(self, extra_primaries: set[int]) -> None:
        """Wait for the locks of every request's identifiers and identities, and load those identities."""
        self._lock(extra_primaries, wait=True)

    def _apply(self, request: Input, seen: dict[tuple[str, str], tuple[bytes, dict[str, Any]]]) -> Result:
        self._ids_wanted -= 1
        key = (request.source, request.event_id)
        if request.idempotent and key in seen:
            digest, stored = seen[key]
            if digest != request.fingerprint:
                return KeyConflict(*key)
            return Resolution.from_json(stored, partial(self._current_view, request))
        ids = request.identifiers
        email, phone = self.guard.admit(ids.email, ids.phone)
        self._flush_splits()
        if email is None and phone is None:
            return BlockedInput(*key)
        now = self.now
        at = now if request.occurred_at is None else min(request.occurred_at, now)
        applied = self.graph.apply(email, phone, at, now, self._next_id)
        if applied.contact_id is not None:
            self.created_by[applied.contact_id] = request
        resolution = Resolution(applied.outcome, applied.contact_id, applied.contact, applied.merge)
        if request.idempotent:
            seen[key] = (request.fingerprint, resolution.to_json(request.keeps_answer))
            self._remember(request, *seen[key])
        if request.publish_unchanged or applied.outcome is not Outcome.MATCHED:
            contact = applied.contact.document()
            self.outbox.extend(outbox_events(request.source, request.event_id, applied, self.time, contact))
        if applied.merge is not None:
            self.record_merge(request.source, request.event_id, Identifiers(email, phone), applied.merge)
        return resolution

    def _current_view(self, request: Input, primary_id: int) -> ContactView:
        """A replay's identity as it is now: the one holding the input's values, if any still does;
        else an empty view of the primary it had."""
        graph = self.graph
        for kind, value in _values(request):
            if holders := graph.holders(kind, value):
                return graph.view(graph.rows[min(holders)].primary_id)
        return ContactView(primary_id, (), (), ())

    def _lock(self, extra_primaries: set[int], wait: bool, *, inputs: bool = False) -> list[bool]:
        """Lock what the requests can touch and load those identities; returns which requests go on in
        this transaction.

        First the advisory locks of every request's identifiers and idempotency key, then the row locks
        of the primaries of the clusters holding those identifiers. With `wait`, every lock is waited
        for, in one global order. Otherwise locks are only tried, so this transaction never waits for
        another: a request with a lock held elsewhere, and every later request sharing an identifier, a
        key or a cluster with it, is left for the next transaction.

        Two round trips: the key locks with the lookups, then the row locks with the loading of the
        clusters (of every primary asked for: `_load_clusters` keeps those locked).

        With `inputs`, a value known to be blocked (a junk value, or one the cache holds) is neither
        locked nor looked up: a blocked value links nothing, so no two inputs merge through it, and the
        identities holding it are not the input's. What the input does need is the block to hold until
        it commits. A junk value's always does; the cache's word is read again once the row locks are
        held (`_send_load`), and a value found unblocked then restarts the transaction without the cache
        (`_StaleBlock`). An unblock committing after that read locked no row this transaction holds (it
        locks every identity holding the value before removing the block), so no identity loaded here
        holds the value: the input drops it as if it came first. The inputs' processed-event records and
        their new contact ids are fetched in the same round trips.
        """
        conn = self.conn
        values = {v for vs in self._values for v in vs}
        if inputs:
            self._skipped = {v for v in values if self.blocklist.known_blocked(*v)}
            values -= self._skipped
        keys = [_lock_keys(r, vs, self._skipped) for r, vs in zip(self.requests, self._values, strict=True)]
        every = _json(sorted({k for ks in keys for k in ks}))
        busy_keys = conn.execute(queries.LOCK_KEYS if wait else queries.TRY_LOCK_KEYS, [every])
        # After the key locks: the record of a key this transaction holds is final. API calls without
        # an Idempotency-Key have no record to find.
        keyed = [r for r in self.requests if r.idempotent]
        processed = None
        if inputs and keyed:
            sources, ids = _json(list({r.source for r in keyed})), _json([r.event_id for r in keyed])
            processed = conn.execute(queries.PROCESSED_EVENTS, {"sources": sources, "ids": ids})
        # After the advisory locks: a block of these values committed before them is seen (blockers
        # take the value's lock too).
        self.blocklist.prefetch(values)
        primaries_of = self._lookup(values)
        self._records = [] if processed is None else processed.fetchall()
        clusters = [set().union(*(primaries_of.get(v, ()) for v in vs)) for vs in self._values]
        held = set() if wait else {row[0] for row in busy_keys.fetchall()}
        ready = _independent(keys, clusters, held, set())
        wanted = set().union(extra_primaries, *(c for c, go in zip(clusters, ready, strict=True) if go))
        statement = queries.LOCK_PRIMARIES if wait else queries.LOCK_PRIMARIES_SKIP_LOCKED
        cursor = conn.execute(statement, [_json(sorted(wanted))])
        if inputs:
            self._new_rows = self._count_new_rows(ready, primaries_of)
        loading = self._send_load(wanted)
        locked = {row[0] for row in cursor.fetchall()}
        if not wait:
            ready = _independent(keys, clusters, held, wanted - locked)
        going = (vs for vs, go in zip(self._values, ready, strict=True) if go)
        self._known = {v for vs in going for v in vs} & primaries_of.keys()
        self._load_clusters(locked, loading)
        return ready

    def _count_new_rows(self, ready: list[bool], primaries_of: dict[tuple[Kind, str], set[int]]) -> int:
        """How many rows the ready inputs may insert: one per input, not a replay, holding an unblocked
        value no live row holds. Asks nothing of the database: the blocks of the values not skipped
        came back with the lookup (the skipped values' second lookup is not sent yet)."""
        replays = {(source, event_id) for source, event_id, *_ in self._records}
        return sum(
            go
            and (r.source, r.event_id) not in replays
            and any(v not in self._skipped and v not in primaries_of and not self.blocklist(*v) for v in vs)
            for r, vs, go in zip(self.requests, self._values, ready, strict=True)
        )

    def _send_load(self, primaries: set[int]) -> tuple[psycopg.Cursor[Any], psycopg.Cursor[Any]]:
        """Send the loading of these primaries' clusters, the clock with the contact ids the inputs may
        need, and the skipped values' blocks. (A load sent again leaves the ids of the first unused: gaps,
        as a rollback leaves.)"""
        rows = self.conn.execute(queries.CLUSTERS_OF_PRIMARIES, [_json(sorted(primaries))], binary=True)
        clock = self.conn.execute(queries.CLOCK_AND_CONTACT_IDS, [self._new_rows])
        self.blocklist.prefetch(self._skipped, again=True)  # under the row locks (see `_lock`)
        return rows, clock

    def _load_clusters(
        self, locked: set[int], loading: tuple[psycopg.Cursor[Any], psycopg.Cursor[Any]]
    ) -> None:
        """Load the clusters of the `locked` primaries once every primary they hold is locked too.

        The identifiers' rows cannot change while their advisory locks are held, but their clusters can
        change between the lookup and the row lock: merged (a locked primary then shows up linked to
        another one) or split (rows then show up linked to a new primary). The other primary is locked
        without waiting, or the transaction restarts with it.
        """
        while True:
            rows, clock = loading
            # Only the rows of the locked primaries' lookups: `loading` may hold other clusters' rows.
            found = {row[0]: row for row in rows.fetchall() if row[0] in locked or row[3] in locked}
            graph = IdentityGraph.of(Contact(*row) for row in found.values())
            missing = {r.primary_id for r in graph.rows.values()} - locked
            moved = [(kind, value) for kind, value in self._known if not graph.holders(kind, value)]
            if moved:
                missing |= set().union(*self._lookup(moved).values()) - locked
            if not missing:
                if not all(self.blocklist(*v) for v in self._skipped):
                    raise _StaleBlock("a value the cache held as blocked was unblocked")
                self.now, ids = _clock_and_ids(clock)
                self.graph, self._free_ids = graph, ids[::-1]
                self.time = self.now.isoformat()
                self.guard = Guard(self.conn, graph, self.blocklist, self.limits, self.now)
                return
            try:
                self.conn.execute(queries.LOCK_PRIMARIES_NOWAIT, [_json(sorted(missing))]).fetchall()
            except errors.LockNotAvailable as exc:
                raise _PrimaryBusy(locked | missing, exc) from exc
            locked |= missing
            loading = self._send_load(locked)

    def _lookup(self, values: Iterable[tuple[Kind, str]]) -> dict[tuple[Kind, str], set[int]]:
        """The primaries of the live rows holding each value (one round trip, index lookups)."""
        emails = sorted(v for k, v in values if k == "email")
        phones = sorted(v for k, v in values if k == "phone")
        cursor = self.conn.execute(
            queries.LOOKUP_PRIMARIES, {"emails": _json(emails), "phones": _json(phones)}
        )
        primaries_of: dict[tuple[Kind, str], set[int]] = {}
        for kind, value, primary in cursor.fetchall():
            primaries_of.setdefault(("email" if kind == "e" else "phone", value), set()).add(primary)
        return primaries_of

    def _next_id(self) -> int:
        """Contact ids come from the table's sequence: those `_lock` foresaw came with the clock; more
        are fetched in a block, for the inputs left, only once a row is needed."""
        if not self._free_ids:
            cursor = self.conn.execute(queries.CLOCK_AND_CONTACT_IDS, [self._ids_wanted + 1])
            self._free_ids = _clock_and_ids(cursor)[1][::-1]
        return self._free_ids.pop()

    def _remember(self, request: Input, digest: bytes, result: dict[str, Any]) -> None:
        self.processed.append(
            {
                "source": request.source,
                "event_id": request.event_id,
                "payload_hash": digest.hex(),
                "result": result,
            }
        )

    def record_merge(self, source: str, event_id: str, bridge: Identifiers, merge: Merge) -> None:
        if bridge.email is not None and bridge.phone is not None:
            self.guard.bridges.append((bridge.email, bridge.phone))
        self.merges.append(
            {
                "source": source,
                "source_event_id": event_id,
                "email": bridge.email,
                "phone_number": bridge.phone,
                "surviving_primary_id": merge.surviving_primary_id,
                "merged_primary_ids": merge.merged_primary_ids,
                "relinked_contact_ids": merge.relinked_contact_ids,
                "merged_at": self.now,
            }
        )

    def _flush_splits(self) -> None:
        """Announce the splits made so far, before the events of the input that caused them."""
        for split in self.guard.take_splits():
            self.splits.append(
                {
                    "cause_type": split.cause_type,
                    "cause_id": split.cause_id,
                    "former_primary_id": split.former_primary_id,
                    "primary_ids": [view.primary_id for view in split.identities],
                    "split_at": self.now,
                }
            )
            self.outbox.append(split_event(split, self.time))

    def write(self) -> None:
        """Write everything this transaction changed, one statement per table."""
        self._flush_splits()
        graph = self.graph
        inserted = {row.id for row in graph.inserted}
        contacts = [
            {
                "id": r.id,
                "email": r.email,
                "phone_number": r.phone_number,
                "linked_id": r.linked_id,
                "link_precedence": r.link_precedence,
                "created_at": r.created_at,
                "updated_at": r.updated_at,
                "source": self.created_by[r.id].source,
                "source_event_id": self.created_by[r.id].event_id,
            }
            for r in graph.inserted
        ]
        links = [
            {
                "id": r.id,
                "linked_id": r.linked_id,
                "link_precedence": r.link_precedence,
                "updated_at": r.updated_at,
            }
            for r in (graph.rows[i] for i in sorted(graph.changed - inserted))
        ]
        for statement, rows in (
            (queries.INSERT_CONTACTS, contacts),
            (queries.UPDATE_LINKS, links),
            (queries.INSERT_MERGES, self.merges),
            (queries.INSERT_SPLITS, self.splits),
            (queries.INSERT_PROCESSED, self.processed),
        ):
            if rows:
                self.conn.execute(statement, {"rows": _json(rows)})
        if events := self.outbox:
            # One row for them all, one CloudEvent per line (sql/008).
            outbox = {
                "types": _json([e.event_type for e in events]),
                "keys": _json([e.key for e in events]),
                "payloads": "\n".join([_json(e.payload) for e in events]),
            }
            self.conn.execute(queries.INSERT_OUTBOX, outbox)


def _independent(
    keys: list[list[int]], clusters: list[set[int]], held_keys: set[int], held_primaries: set[int]
) -> list[bool]:
    """Which inputs touch nothing held elsewhere, nor anything an earlier input left waiting touches."""
    held_keys, held_primaries = set(held_keys), set(held_primaries)
    ready = []
    for ks, primaries in zip(keys, clusters, strict=True):
        go = held_keys.isdisjoint(ks) and held_primaries.isdisjoint(primaries)
        if not go:
            held_keys.update(ks)
            held_primaries.update(primaries)
        ready.append(go)
    return ready


def _values(r: Input) -> list[tuple[Kind, str]]:
    return values_of(r.identifiers.email, r.identifiers.phone)


def _lock_keys(r: Input, values: list[tuple[Kind, str]], skipped: set[tuple[Kind, str]]) -> list[int]:
    keys = [lock_key("event", r.source, r.event_id)] if r.idempotent else []
    return keys + [lock_key(kind, value) for kind, value in values if (kind, value) not in skipped]


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _clock_and_ids(cursor: psycopg.Cursor[Any]) -> tuple[datetime, list[int]]:
    """The answer to `queries.CLOCK_AND_CONTACT_IDS`."""
    row = cursor.fetchone()
    assert row is not None
    return row[0], row[1]
