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
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import errors

from consumer import queries
from consumer.contract import ContactPayload, Outcome
from consumer.core.events import OutboxEvent, outbox_events
from consumer.core.graph import Applied, Contact, ContactView, IdentityGraph, Merge
from consumer.normalize import Identifiers

_MAX_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class Request:
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

    def to_json(self, contact: dict[str, object]) -> dict[str, Any]:
        """The stored answer; `contact` is `self.contact.document()`, which the caller has already."""
        merge = self.merge
        return {
            "outcome": self.outcome.value,
            "contactId": self.contact_id,
            "contact": contact,
            "merge": None
            if merge is None
            else [
                merge.surviving_primary_id,
                list(merge.merged_primary_ids),
                list(merge.relinked_contact_ids),
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Resolution:
        contact = ContactPayload.model_validate(data["contact"])
        merge = data["merge"]
        return cls(
            outcome=Outcome(data["outcome"]),
            contact_id=data["contactId"],
            contact=ContactView(
                contact.primaryContactId,
                tuple(contact.emails),
                tuple(contact.phoneNumbers),
                tuple(contact.secondaryContactIds),
            ),
            merge=None if merge is None else Merge(merge[0], tuple(merge[1]), tuple(merge[2])),
            duplicate=True,
        )


@dataclass(frozen=True, slots=True)
class KeyConflict:
    """The (source, id) was processed before with a different payload: nothing was applied."""

    source: str
    event_id: str


class IdempotencyKeyReused(Exception):
    def __init__(self, conflict: KeyConflict) -> None:
        super().__init__(f"idempotency key {conflict.event_id!r} was already used with a different payload")
        self.conflict = conflict


def reconcile(conn: psycopg.Connection[Any], request: Request) -> Resolution:
    """Apply one input in its own transaction; raises `IdempotencyKeyReused` on a conflicting replay."""
    (result,) = reconcile_batch(conn, [request])
    if isinstance(result, KeyConflict):
        raise IdempotencyKeyReused(result)
    return result


def reconcile_batch(
    conn: psycopg.Connection[Any], requests: Sequence[Request]
) -> list[Resolution | KeyConflict]:
    """Apply many inputs, with the same results as applying them one by one in order.

    Usually one transaction. Inputs touching an identifier or a cluster another transaction has locked,
    with every later input sharing an identifier, an idempotency key or a cluster with them, go to a
    second transaction that waits for those locks, instead of holding up the whole batch: inputs that
    share something keep their order, and independent ones commute. Each transaction commits the
    contacts, the processed-event records, the merge log and the outbox rows of its inputs together.
    `conn` must not be inside a transaction: this function owns it, and restarts it when needed.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("reconcile_batch needs a connection outside any transaction")
    results: list[Resolution | KeyConflict | None] = [None] * len(requests)
    wait = False
    while left := [i for i, result in enumerate(results) if result is None]:
        for i, result in zip(left, _transaction(conn, [requests[i] for i in left], wait), strict=True):
            results[i] = result
        wait = True
    return [result for result in results if result is not None]


def _transaction(
    conn: psycopg.Connection[Any], requests: Sequence[Request], wait: bool
) -> list[Resolution | KeyConflict | None]:
    """One transaction, restarted when it must; None for the inputs it left for the next one."""
    extra_primaries: set[int] = set()
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            # Pipeline mode: statements that do not need each other's results share one round trip,
            # so a transaction costs five or six round trips whatever its size.
            with conn.pipeline(), conn.transaction():
                return _Batch(conn, requests).run(extra_primaries, wait)
        except _PrimaryBusy as exc:
            if attempt == _MAX_ATTEMPTS:
                # An OperationalError like any lock timeout: callers retry it or answer 503.
                raise exc.error from None
            # Rare (a merge raced the lookup): the restart waits for that primary in the global order.
            extra_primaries |= exc.primaries
            wait = True
        except (errors.DeadlockDetected, errors.SerializationFailure):
            if attempt == _MAX_ATTEMPTS:
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def contact_view(conn: psycopg.Connection[Any], contact_id: int) -> ContactView | None:
    """The consolidated identity of the cluster holding `contact_id`, or None if unknown or deleted."""
    with conn.transaction():
        rows = [Contact(*row) for row in conn.execute(queries.CLUSTER_OF_CONTACT, [contact_id])]
    primaries = {row.primary_id for row in rows}
    graph = IdentityGraph.of(rows)
    if len(primaries) != 1 or (primary := primaries.pop()) not in graph.rows:
        return None
    return graph.view(primary)


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key; every process derives the same key from the same parts."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class _PrimaryBusy(Exception):
    def __init__(self, primaries: set[int], error: errors.LockNotAvailable) -> None:
        self.primaries = primaries
        self.error = error


class _Batch:
    def __init__(self, conn: psycopg.Connection[Any], requests: Sequence[Request]) -> None:
        self.conn = conn
        self.requests = requests
        self.created_by: dict[int, Request] = {}
        self.merges: list[dict[str, object]] = []
        self.processed: list[dict[str, object]] = []
        self.outbox: list[OutboxEvent] = []
        self._free_ids: list[int] = []
        self._pending = 0

    def run(self, extra_primaries: set[int], wait: bool) -> list[Resolution | KeyConflict | None]:
        ready, locked = self._lock(extra_primaries, wait)
        conn, requests = self.conn, [r for r, go in zip(self.requests, ready, strict=True) if go]
        if not requests:
            return [None] * len(ready)
        self._pending = len(requests)
        processed = conn.execute(
            queries.PROCESSED_EVENTS,
            [_json([{"source": r.source, "event_id": r.event_id} for r in requests if r.idempotent])],
        )
        graph, now = self._load_clusters(locked)
        seen: dict[tuple[str, str], tuple[bytes, dict[str, Any]]] = {
            (source, event_id): (bytes(digest), result) for source, event_id, digest, result in processed
        }

        results: list[Resolution | KeyConflict] = []
        for request in requests:
            self._pending -= 1
            key = (request.source, request.event_id)
            if request.idempotent and key in seen:
                digest, stored = seen[key]
                replay = digest == request.fingerprint
                results.append(Resolution.from_json(stored) if replay else KeyConflict(*key))
                continue
            ids = request.identifiers
            at = now if request.occurred_at is None else min(request.occurred_at, now)
            applied = graph.apply(ids.email, ids.phone, at, now, self._next_id)
            if applied.contact_id is not None:
                self.created_by[applied.contact_id] = request
            resolution = Resolution(applied.outcome, applied.contact_id, applied.contact, applied.merge)
            contact = applied.contact.document()
            if request.idempotent:
                seen[key] = (request.fingerprint, resolution.to_json(contact))
                self._remember(request, *seen[key])
            self._record(request, applied, contact, now)
            results.append(resolution)
        self._write(graph)
        answers = iter(results)
        return [next(answers) if go else None for go in ready]

    def _lock(self, extra_primaries: set[int], wait: bool) -> tuple[list[bool], set[int]]:
        """Lock what the inputs can touch; returns which inputs go on in this transaction, and the
        primaries locked.

        First the advisory locks of every input's identifiers and idempotency key, then the row locks
        of the primaries of the clusters holding those identifiers. With `wait`, every lock is waited
        for, in one global order. Otherwise locks are only tried, so this transaction never waits for
        another: an input with a lock held elsewhere, and every later input sharing an identifier, a key
        or a cluster with it, is left for the next transaction.
        """
        conn = self.conn
        keys = [_lock_keys(r) for r in self.requests]
        every = _json(sorted({k for ks in keys for k in ks}))
        if wait:
            conn.execute(queries.LOCK_KEYS, [every])
        else:
            busy_keys = conn.execute(queries.TRY_LOCK_KEYS, [every])
        emails = {r.identifiers.email for r in self.requests if r.identifiers.email is not None}
        phones = {r.identifiers.phone for r in self.requests if r.identifiers.phone is not None}
        lookup = conn.execute(
            queries.LOOKUP_PRIMARIES, {"emails": _json(sorted(emails)), "phones": _json(sorted(phones))}
        )
        primaries_of: dict[tuple[str, str], set[int]] = {}
        for kind, value, primary in lookup.fetchall():
            primaries_of.setdefault((kind, value), set()).add(primary)
        clusters = [_primaries(r, primaries_of) for r in self.requests]
        if wait:
            wanted = set().union(extra_primaries, *clusters)
            cursor = conn.execute(queries.LOCK_PRIMARIES, [_json(sorted(wanted))])
            return [True] * len(keys), {row[0] for row in cursor.fetchall()}
        held = {row[0] for row in busy_keys.fetchall()}
        ready = _independent(keys, clusters, held, set())
        wanted = set().union(extra_primaries, *(c for c, go in zip(clusters, ready, strict=True) if go))
        cursor = conn.execute(queries.LOCK_PRIMARIES_SKIP_LOCKED, [_json(sorted(wanted))])
        locked = {row[0] for row in cursor.fetchall()}
        return _independent(keys, clusters, held, wanted - locked), locked

    def _load_clusters(self, locked: set[int]) -> tuple[IdentityGraph, datetime]:
        """Load the clusters of the `locked` primaries once every primary they hold is locked too.

        The identifiers' rows cannot change while their advisory locks are held, but their clusters can
        merge between the lookup and the row lock: a locked primary then shows up linked to another
        one, which is locked without waiting, or the transaction restarts with it.
        """
        while True:
            rows = self.conn.execute(queries.CLUSTERS_OF_PRIMARIES, [_json(sorted(locked))], binary=True)
            clock = self.conn.execute(queries.CLOCK)
            graph = IdentityGraph.of(
                Contact(*row) for row in {row[0]: row for row in rows.fetchall()}.values()
            )
            missing = {r.primary_id for r in graph.rows.values()} - locked
            if not missing:
                return graph, _first(clock)
            try:
                self.conn.execute(queries.LOCK_PRIMARIES_NOWAIT, [_json(sorted(missing))]).fetchall()
            except errors.LockNotAvailable as exc:
                raise _PrimaryBusy(locked | missing, exc) from exc
            locked |= missing

    def _next_id(self) -> int:
        """Contact ids come from the table's sequence, fetched in blocks only once a row is needed."""
        if not self._free_ids:
            cursor = self.conn.execute(queries.ALLOCATE_CONTACT_IDS, [self._pending + 1])
            self._free_ids = [row[0] for row in cursor.fetchall()][::-1]
        return self._free_ids.pop()

    def _remember(self, request: Request, digest: bytes, result: dict[str, Any]) -> None:
        self.processed.append(
            {
                "source": request.source,
                "event_id": request.event_id,
                "payload_hash": digest.hex(),
                "result": result,
            }
        )

    def _record(self, request: Request, applied: Applied, contact: dict[str, object], now: datetime) -> None:
        if request.publish_unchanged or applied.outcome is not Outcome.MATCHED:
            self.outbox.extend(outbox_events(request.source, request.event_id, applied, now, contact))
        if applied.merge is not None:
            merge = applied.merge
            self.merges.append(
                {
                    "source": request.source,
                    "source_event_id": request.event_id,
                    "email": request.identifiers.email,
                    "phone_number": request.identifiers.phone,
                    "surviving_primary_id": merge.surviving_primary_id,
                    "demoted_primary_ids": merge.merged_primary_ids,
                    "relinked_contact_ids": merge.relinked_contact_ids,
                    "merged_at": now,
                }
            )

    def _write(self, graph: IdentityGraph) -> None:
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
        outbox = [
            {"event_type": e.event_type, "message_key": e.key, "payload": e.payload} for e in self.outbox
        ]
        for statement, rows in (
            (queries.INSERT_CONTACTS, contacts),
            (queries.UPDATE_LINKS, links),
            (queries.INSERT_MERGES, self.merges),
            (queries.INSERT_PROCESSED, self.processed),
            (queries.INSERT_OUTBOX, outbox),
        ):
            if rows:
                self.conn.execute(statement, [_json(rows)])


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


def _primaries(r: Request, primaries_of: dict[tuple[str, str], set[int]]) -> set[int]:
    found: set[int] = set()
    if r.identifiers.email is not None:
        found |= primaries_of.get(("e", r.identifiers.email), set())
    if r.identifiers.phone is not None:
        found |= primaries_of.get(("p", r.identifiers.phone), set())
    return found


def _lock_keys(r: Request) -> list[int]:
    keys = [lock_key("event", r.source, r.event_id)] if r.idempotent else []
    if r.identifiers.email is not None:
        keys.append(lock_key("email", r.identifiers.email))
    if r.identifiers.phone is not None:
        keys.append(lock_key("phone", r.identifiers.phone))
    return keys


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _first(cursor: psycopg.Cursor[Any]) -> Any:
    row = cursor.fetchone()
    assert row is not None
    return row[0]
