"""Reconcile inputs into the contact graph inside one PostgreSQL transaction (rules 1-11).

Concurrency (rule 10) is handled by locking, in one global order, everything an input can touch:
first advisory locks on the hashed idempotency keys and normalized identifiers (sorted), then row locks
on the primaries of the matching clusters (sorted by id). A cluster only changes under its primary's
row lock, so once every matching primary is locked the clusters are stable. A primary that appears
only after the first round (a concurrent merge moved it) is locked with NOWAIT; if that fails the
transaction restarts with it in the first round, so no transaction ever waits out of order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
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

    def to_json(self) -> dict[str, Any]:
        merge = self.merge
        return {
            "outcome": self.outcome.value,
            "contactId": self.contact_id,
            "contact": self.contact.payload().model_dump(),
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
    """Apply many inputs in one transaction, with the same results as applying them one by one in order.

    The contacts, the processed-event records, the merge log and the outbox rows commit together.
    `conn` must not be inside a transaction: this function owns it, and restarts it when needed.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("reconcile_batch needs a connection outside any transaction")
    if not requests:
        return []
    extra_primaries: set[int] = set()
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            with conn.transaction():
                return _Batch(conn, requests).run(extra_primaries)
        except _PrimaryBusy as exc:
            extra_primaries |= exc.primaries
        except (errors.DeadlockDetected, errors.SerializationFailure):
            if attempt == _MAX_ATTEMPTS:
                raise
    raise RuntimeError(f"gave up reconciling after {_MAX_ATTEMPTS} lock-order restarts")


def contact_view(conn: psycopg.Connection[Any], contact_id: int) -> ContactView | None:
    """The consolidated identity of the cluster holding `contact_id`, or None if unknown or deleted."""
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
    def __init__(self, primaries: set[int]) -> None:
        self.primaries = primaries


class _Batch:
    def __init__(self, conn: psycopg.Connection[Any], requests: Sequence[Request]) -> None:
        self.conn = conn
        self.requests = requests
        self.created_by: dict[int, Request] = {}
        self.merges: list[tuple[object, ...]] = []
        self.processed: list[tuple[object, ...]] = []
        self.outbox: list[OutboxEvent] = []
        self._free_ids: list[int] = []
        self._pending = len(requests)

    def run(self, extra_primaries: set[int]) -> list[Resolution | KeyConflict]:
        conn, requests = self.conn, self.requests
        conn.execute(queries.LOCK_KEYS, [sorted(set(_lock_keys(requests)))])
        seen: dict[tuple[str, str], tuple[bytes, dict[str, Any]]] = {
            (source, event_id): (bytes(digest), result)
            for source, event_id, digest, result in conn.execute(
                queries.PROCESSED_EVENTS, [[r.source for r in requests], [r.event_id for r in requests]]
            )
        }
        fresh = [r for r in requests if (r.source, r.event_id) not in seen]
        emails = [r.identifiers.email for r in fresh if r.identifiers.email is not None]
        phones = [r.identifiers.phone for r in fresh if r.identifiers.phone is not None]
        primaries = self._lock_clusters(emails, phones, extra_primaries)
        graph = IdentityGraph.of(
            Contact(*row) for row in conn.execute(queries.CLUSTER_ROWS, {"ids": primaries})
        )
        now = _fetch_one(conn, queries.CLOCK)

        results: list[Resolution | KeyConflict] = []
        for request in requests:
            self._pending -= 1
            key = (request.source, request.event_id)
            if key in seen:
                digest, stored = seen[key]
                results.append(
                    Resolution.from_json(stored) if digest == request.fingerprint else KeyConflict(*key)
                )
                continue
            ids = request.identifiers
            at = now if request.occurred_at is None else min(request.occurred_at, now)
            applied = graph.apply(ids.email, ids.phone, at, now, self._next_id)
            if applied.contact_id is not None:
                self.created_by[applied.contact_id] = request
            resolution = Resolution(applied.outcome, applied.contact_id, applied.contact, applied.merge)
            seen[key] = (request.fingerprint, resolution.to_json())
            self._record(request, applied, seen[key], now)
            results.append(resolution)
        self._write(graph)
        return results

    def _lock_clusters(self, emails: list[str], phones: list[str], extra: set[int]) -> list[int]:
        """Row-lock the primary of every cluster the identifiers touch; returns the current primaries."""
        locked = extra | set(self._matching_primaries(emails, phones))
        self.conn.execute(queries.LOCK_PRIMARIES, [sorted(locked)])
        while True:
            current = self._matching_primaries(emails, phones)
            missing = set(current) - locked
            if not missing:
                return current
            try:
                self.conn.execute(queries.LOCK_PRIMARIES_NOWAIT, [sorted(missing)])
            except errors.LockNotAvailable:
                raise _PrimaryBusy(locked | missing) from None
            locked |= missing

    def _matching_primaries(self, emails: list[str], phones: list[str]) -> list[int]:
        if not emails and not phones:
            return []
        return [row[0] for row in self.conn.execute(queries.MATCHING_PRIMARIES, [emails, phones])]

    def _next_id(self) -> int:
        """Contact ids come from the table's sequence, fetched in blocks only once a row is needed."""
        if not self._free_ids:
            cursor = self.conn.execute(queries.ALLOCATE_CONTACT_IDS, [self._pending + 1])
            self._free_ids = [row[0] for row in cursor][::-1]
        return self._free_ids.pop()

    def _record(
        self, request: Request, applied: Applied, stored: tuple[bytes, dict[str, Any]], now: datetime
    ) -> None:
        digest, result = stored
        self.processed.append((request.source, request.event_id, digest, orjson.dumps(result).decode()))
        if request.publish_unchanged or applied.outcome is not Outcome.MATCHED:
            self.outbox.extend(outbox_events(request.source, request.event_id, applied, now))
        if applied.merge is not None:
            merge = applied.merge
            self.merges.append(
                (
                    request.source,
                    request.event_id,
                    request.identifiers.email,
                    request.identifiers.phone,
                    merge.surviving_primary_id,
                    list(merge.merged_primary_ids),
                    list(merge.relinked_contact_ids),
                    now,
                )
            )

    def _write(self, graph: IdentityGraph) -> None:
        inserted = {row.id for row in graph.inserted}
        _copy(
            self.conn,
            queries.COPY_CONTACTS,
            (
                (
                    row.id,
                    row.email,
                    row.phone_number,
                    row.linked_id,
                    row.link_precedence,
                    row.created_at,
                    row.updated_at,
                    self.created_by[row.id].source,
                    self.created_by[row.id].event_id,
                )
                for row in graph.inserted
            ),
        )
        changed = [graph.rows[i] for i in sorted(graph.changed - inserted)]
        if changed:
            self.conn.execute(
                queries.UPDATE_LINKS,
                [
                    [r.id for r in changed],
                    [r.linked_id for r in changed],
                    [r.link_precedence for r in changed],
                    [r.updated_at for r in changed],
                ],
            )
        _copy(self.conn, queries.COPY_MERGES, self.merges)
        _copy(self.conn, queries.COPY_PROCESSED, self.processed)
        _copy(
            self.conn,
            queries.COPY_OUTBOX,
            ((e.event_type, e.key, orjson.dumps(e.payload).decode()) for e in self.outbox),
        )


def _lock_keys(requests: Iterable[Request]) -> Iterable[int]:
    for r in requests:
        yield lock_key("event", r.source, r.event_id)
        if r.identifiers.email is not None:
            yield lock_key("email", r.identifiers.email)
        if r.identifiers.phone is not None:
            yield lock_key("phone", r.identifiers.phone)


def _copy(conn: psycopg.Connection[Any], statement: str, rows: Iterable[Sequence[object]]) -> None:
    rows = list(rows)
    if not rows:
        return
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _fetch_one(conn: psycopg.Connection[Any], statement: str) -> Any:
    row = conn.execute(statement).fetchone()
    assert row is not None
    return row[0]
