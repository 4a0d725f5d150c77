"""The audit log (DESIGN.md rule 19): who read or changed what, and when; ids only, no personal data."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

import psycopg

from consumer import queries
from consumer.clients import Client

T = TypeVar("T")


class Action(StrEnum):
    """Every audited action; `ids` says what each one names."""

    CONTACT_READ = "contact.read"  # the identity's contact ids, primary first
    CONTACT_EXPLAIN = "contact.explain"  # the contact ids asked about
    BLOCKLIST_READ = "blocked_value.list"  # the block ids returned
    BLOCK_ADD = "blocked_value.add"  # the new block's id
    BLOCK_REMOVE = "blocked_value.remove"  # the removed block's id
    ERASURE = "erasure.request"  # the erasure request's id, then the erased contact ids


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    client: str
    action: str
    ids: list[int]


def record_audit(conn: psycopg.Connection[Any], client: Client, action: Action, ids: Iterable[int]) -> None:
    """Write one audit row. Call it in the transaction that does the work, so both commit or neither."""
    conn.execute(queries.INSERT_AUDIT, [client.name, action.value, list(ids)])


def audited(
    work: Callable[[psycopg.Connection[Any]], T],
    client: Client,
    action: Action,
    ids: Callable[[T], Iterable[int]],
) -> Callable[[psycopg.Connection[Any]], T]:
    """`work`, then its audit row on the same connection: for work that runs its own transactions
    (the row then commits right after the work's; nothing is audited if the work raises)."""

    def run(conn: psycopg.Connection[Any]) -> T:
        result = work(conn)
        record_audit(conn, client, action, ids(result))
        return result

    return run


def read_audit(
    conn: psycopg.Connection[Any], *, since: datetime | None = None, client: str | None = None
) -> list[AuditEntry]:
    cursor = conn.execute(queries.READ_AUDIT, {"since": since, "client": client})
    return [AuditEntry(at, name, action, ids) for at, name, action, ids in cursor]
