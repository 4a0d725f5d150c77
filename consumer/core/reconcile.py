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
            # Pipeline mode: statements that do not need each other's results share one round trip,
            # so a batch costs three or four round trips whatever its size.
            with conn.pipeline(), conn.transaction():
                return _Batch(conn, requests).run(extra_primaries)
        except _PrimaryBusy as exc:
            if attempt == _MAX_ATTEMPTS:
                # An OperationalError like any lock timeout: callers retry it or answer 503.
                raise exc.error from None
            extra_primaries |= exc.primaries
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
        self._pending = len(requests)

    def run(self, extra_primaries: set[int]) -> list[Resolution | KeyConflict]:
        conn, requests = self.conn, self.requests
        emails = {r.identifiers.email for r in requests if r.identifiers.email is not None}
        phones = {r.identifiers.phone for r in requests if r.identifiers.phone is not None}
        identifiers = {"emails": _json(sorted(emails)), "phones": _json(sorted(phones))}
        conn.execute(queries.LOCK_KEYS, [_json(sorted(set(_lock_keys(requests))))])
        processed = conn.execute(
            queries.PROCESSED_EVENTS,
            [_json([{"source": r.source, "event_id": r.event_id} for r in requests])],
        )
        locking = conn.execute(
            queries.LOCK_MATCHING_PRIMARIES, {**identifiers, "extra": _json(sorted(extra_primaries))}
        )
        graph, now = self._load_clusters(identifiers, emails, phones, {row[0] for row in locking.fetchall()})
        seen: dict[tuple[str, str], tuple[bytes, dict[str, Any]]] = {
            (source, event_id): (bytes(digest), result) for source, event_id, digest, result in processed
        }

        results: list[Resolution | KeyConflict] = []
        for request in requests:
            self._pending -= 1
            key = (request.source, request.event_id)
            fingerprint = request.fingerprint
            if key in seen:
                digest, stored = seen[key]
                results.append(Resolution.from_json(stored) if digest == fingerprint else KeyConflict(*key))
                continue
            ids = request.identifiers
            at = now if request.occurred_at is None else min(request.occurred_at, now)
            applied = graph.apply(ids.email, ids.phone, at, now, self._next_id)
            if applied.contact_id is not None:
                self.created_by[applied.contact_id] = request
            resolution = Resolution(applied.outcome, applied.contact_id, applied.contact, applied.merge)
            seen[key] = (fingerprint, resolution.to_json())
            self._record(request, applied, seen[key], now)
            results.append(resolution)
        self._write(graph)
        return results

    def _load_clusters(
        self, identifiers: dict[str, str], emails: set[str], phones: set[str], locked: set[int]
    ) -> tuple[IdentityGraph, datetime]:
        """Load the clusters once every one of their primaries is locked by this transaction.

        A concurrent merge may have moved an identifier to another cluster between the lookup and the
        lock; that primary is then locked without waiting, or the transaction restarts with it.
        """
        while True:
            rows = self.conn.execute(queries.MATCHING_CLUSTERS, identifiers, binary=True)
            clock = self.conn.execute(queries.CLOCK)
            graph = IdentityGraph.of(Contact(*row) for row in rows.fetchall())
            current = {
                r.primary_id for r in graph.rows.values() if r.email in emails or r.phone_number in phones
            }
            missing = current - locked
            if not missing:
                return graph, _first(clock)
            try:
                self.conn.execute(queries.LOCK_PRIMARIES_NOWAIT, [sorted(missing)]).fetchall()
            except errors.LockNotAvailable as exc:
                raise _PrimaryBusy(locked | missing, exc) from exc
            locked |= missing

    def _next_id(self) -> int:
        """Contact ids come from the table's sequence, fetched in blocks only once a row is needed."""
        if not self._free_ids:
            cursor = self.conn.execute(queries.ALLOCATE_CONTACT_IDS, [self._pending + 1])
            self._free_ids = [row[0] for row in cursor.fetchall()][::-1]
        return self._free_ids.pop()

    def _record(
        self, request: Request, applied: Applied, stored: tuple[bytes, dict[str, Any]], now: datetime
    ) -> None:
        digest, result = stored
        self.processed.append(
            {
                "source": request.source,
                "event_id": request.event_id,
                "payload_hash": digest.hex(),
                "result": result,
            }
        )
        if request.publish_unchanged or applied.outcome is not Outcome.MATCHED:
            self.outbox.extend(outbox_events(request.source, request.event_id, applied, now))
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


def _lock_keys(requests: Iterable[Request]) -> Iterable[int]:
    for r in requests:
        yield lock_key("event", r.source, r.event_id)
        if r.identifiers.email is not None:
            yield lock_key("email", r.identifiers.email)
        if r.identifiers.phone is not None:
            yield lock_key("phone", r.identifiers.phone)


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _first(cursor: psycopg.Cursor[Any]) -> Any:
    row = cursor.fetchone()
    assert row is not None
    return row[0]
