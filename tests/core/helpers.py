"""Building requests and reading the tables back, for the core's tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row

from consumer.core import Input
from consumer.normalize import Normalizer
from tests.support import SOURCE

NORMALIZER = Normalizer()


def at(day: str) -> datetime:
    """Midnight UTC of an ISO date, e.g. at("2023-04-01")."""
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def request(
    email: object = None,
    phone: object = None,
    *,
    event: str,
    when: datetime | None = None,
    source: str = SOURCE,
    order_id: str | None = None,
    publish_unchanged: bool = True,
    idempotent: bool = True,
) -> Input:
    """A request from raw values, normalized the way the worker and the API do it."""
    return Input(
        NORMALIZER.identifiers(email, phone),
        source=source,
        event_id=event,
        occurred_at=when,
        order_id=order_id,
        publish_unchanged=publish_unchanged,
        idempotent=idempotent,
    )


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    email: str | None
    phone_number: str | None
    linked_id: int | None
    link_precedence: str
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    source: str
    source_event_id: str


def contacts(conn: psycopg.Connection[Any]) -> list[Row]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id, email, phone_number, linked_id, link_precedence, created_at, updated_at, deleted_at,"
            " source, source_event_id FROM contact ORDER BY id"
        )
        result = [Row(*row) for row in cur]
    conn.commit()
    return result


def table(conn: psycopg.Connection[Any], statement: LiteralString) -> list[dict[str, Any]]:
    """Rows of a test query as dicts; ends the read transaction so the core gets an idle connection."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(statement)
        result = cur.fetchall()
    conn.commit()
    return result


def outbox(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return table(
        conn, "SELECT event_type, message_key, payload FROM outbox_event ORDER BY outbox_id, position"
    )


def merge_log(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return table(
        conn,
        "SELECT source, source_event_id, email, phone_number, surviving_primary_id, merged_primary_ids,"
        " relinked_contact_ids FROM merge_log ORDER BY id",
    )


def counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """How many rows each table holds: a write shows up here."""
    (row,) = table(
        conn,
        "SELECT (SELECT count(*) FROM contact) AS contact,"
        " (SELECT count(*) FROM processed_event) AS processed_event,"
        " (SELECT count(*) FROM merge_log) AS merge_log,"
        " (SELECT count(*) FROM outbox_event) AS outbox",
    )
    return dict(row)


def execute(conn: psycopg.Connection[Any], statement: LiteralString, params: tuple[object, ...] = ()) -> None:
    """A hand-made change to the tables (corrupting or soft-deleting rows), committed."""
    conn.execute(statement, params)
    conn.commit()


def start_until_it_waits(
    db: psycopg.Connection[Any], conn: psycopg.Connection[Any], work: Callable[[], object], why: str
) -> threading.Thread:
    """Run `work` (which uses `conn`) on a thread; return once `conn`'s session waits for a lock."""
    pid = conn.info.backend_pid
    thread = threading.Thread(target=work)
    thread.start()
    waiting = "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted"
    while db.execute(waiting, [pid]).fetchone() != (1,):
        db.rollback()
        assert thread.is_alive(), why
    return thread


def run_concurrently(
    threads: int, work: Callable[[int, psycopg.Connection[Any], threading.Barrier], None], url: str
) -> None:
    """Run `work(n, connection, barrier)` on `threads` threads at once, each with its own connection."""
    start = threading.Barrier(threads, timeout=60)
    failures: list[BaseException] = []

    def run(n: int) -> None:
        try:
            with psycopg.connect(url) as conn:
                start.wait()
                work(n, conn, start)
        except BaseException as exc:
            failures.append(exc)
            start.abort()

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise BaseExceptionGroup("a worker thread failed", failures)
