"""Reading and writing the test database directly: counts, the outbox, the core applied by hand."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, LiteralString

import psycopg

from consumer.core import Input, reconcile_batch
from consumer.normalize import Normalizer
from tests.support import SOURCE

TABLES = "contact, processed_event, merge_log, outbox, blocked_value, split_log, audit_log, erasure_request"
Target = str | psycopg.Connection[Any]


def reset_database(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    conn.commit()


def rows(target: Target, statement: LiteralString, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """A query's rows, from a database URL (a connection of its own) or an open connection (committed
    afterwards, so the next call sees a new snapshot)."""
    if isinstance(target, str):
        with psycopg.connect(target) as conn:
            return conn.execute(statement, params).fetchall()
    result = target.execute(statement, params).fetchall()
    target.commit()
    return result


def scalar(target: Target, statement: LiteralString, params: tuple[object, ...] = ()) -> int:
    ((value,),) = rows(target, statement, params)
    return int(value or 0)


def processed(target: Target, source: str = SOURCE) -> int:
    return scalar(target, "SELECT count(*) FROM processed_event WHERE source = %s", (source,))


def unpublished(target: Target) -> int:
    return scalar(target, "SELECT count(*) FROM outbox_event WHERE published_at IS NULL")


def published(target: Target) -> int:
    return scalar(target, "SELECT count(*) FROM outbox_event WHERE published_at IS NOT NULL")


def outbox_rows(target: Target) -> list[tuple[Any, ...]]:
    """(outbox row id, event_type, message_key, payload, published) for every outbox event, in order."""
    return rows(
        target,
        "SELECT outbox_id, event_type, message_key, payload, published_at IS NOT NULL"
        " FROM outbox_event ORDER BY outbox_id, position",
    )


def reconcile_events(
    conn: psycopg.Connection[Any], events: Iterable[tuple[str, object, object]], batch: int = 100
) -> None:
    """Apply (event id, email, phone) through the core, `batch` events per transaction."""
    normalizer = Normalizer()
    requests = [Input(normalizer.identifiers(email, phone), SOURCE, eid) for eid, email, phone in events]
    for start in range(0, len(requests), batch):
        reconcile_batch(conn, requests[start : start + batch])


def synthetic_events(count: int, first: int = 0) -> Iterator[tuple[str, object, object]]:
    """A deterministic mix: new buyers, a second phone, repeats, and bridges merging pairs of buyers.

    Events `first .. first + count - 1`; ranges starting at multiples of 6 share no buyer.
    """
    for i in range(first, first + count):
        buyer, step = divmod(i, 3)
        email, phone = f"buyer{buyer}@example.com", f"+1555{buyer:07d}"
        if step == 0:
            yield f"e{i}", email, phone
        elif step == 1:
            yield f"e{i}", email, f"+1666{buyer:07d}"
        elif buyer % 2:
            # The previous buyer's email with this buyer's phone: their two clusters merge.
            yield f"e{i}", f"buyer{buyer - 1}@example.com", phone
        else:
            yield f"e{i}", email, None


_ID_FIELDS = frozenset(
    {
        "contactId",
        "primaryContatctId",
        "primaryContactId",
        "secondaryContactIds",
        "survivingPrimaryId",
        "mergedPrimaryIds",
        "relinkedContactIds",
    }
)


def snapshot(database_url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Contacts and outbox events with every contact id replaced by the event that created that row.

    Ids come from a sequence in blocks, so they depend on how events were batched; provenance does not.
    """
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, email, phone_number, linked_id, link_precedence, created_at, source_event_id"
            " FROM contact ORDER BY created_at, id"
        ).fetchall()
        events = conn.execute(
            "SELECT event_type, message_key, payload FROM outbox_event ORDER BY outbox_id, position"
        ).fetchall()
    by_id = {row[0]: row[6] for row in rows}
    contacts = [
        (event, email, phone, by_id.get(linked), precedence, created)
        for _, email, phone, linked, precedence, created, event in rows
    ]

    def canonical(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: canonical(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [canonical(v, key) for v in value]
        if key in _ID_FIELDS and isinstance(value, int):
            return by_id[value]
        return value

    outbox = [(kind, by_id[int(key)], canonical(payload["data"])) for kind, key, payload in events]
    return contacts, outbox
