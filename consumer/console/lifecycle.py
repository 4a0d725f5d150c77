"""Blocks, unblocks and erasures for the console, each with a dry run: the console's calls into the core.

A preview runs the very same core call inside a transaction that is always rolled back, so it shows
exactly what confirming would do (as of now) and changes nothing, publishes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

import psycopg

from consumer import queries
from consumer.core import ContactView

Kind = Literal["email", "phone"]
Reason = Literal["operator", "fan_out", "identity_cap", "builtin"]
REASONS: tuple[Reason, ...] = get_args(Reason)


class Pending(Exception):
    """The core this needs has not landed in this build."""


@dataclass(frozen=True, slots=True)
class Block:
    id: int
    kind: Kind
    value: str | None
    """None once the value was erased: only its keyed hash is kept (rule 17)."""
    reason: str
    added_by: str
    identity_id: int | None
    identity_size: int | None
    """Live rows of the identity the value was found in, now; None if it is gone."""
    created_at: datetime
    removed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Effect:
    """What a block, an unblock or an erasure did, or would do."""

    cause_id: int | None
    before: tuple[ContactView, ...]
    after: tuple[ContactView, ...]
    erased_contact_ids: tuple[int, ...] = ()


def blocks(conn: psycopg.Connection[Any], reason: str | None) -> list[Block]:
    return [Block(*row) for row in conn.execute(queries.CONSOLE_BLOCKS, {"reason": reason})]


def block(conn: psycopg.Connection[Any], kind: Kind, value: str, by: str, *, dry_run: bool) -> Effect:
    raise Pending("blocking a value (rules 12 and 15)")


def unblock(conn: psycopg.Connection[Any], block_id: int, by: str, *, dry_run: bool) -> Effect:
    raise Pending("unblocking a value (rule 16)")


def erase(conn: psycopg.Connection[Any], kind: Kind, value: str, by: str, *, dry_run: bool) -> Effect:
    raise Pending("erasure (rule 17)")


def erasure_events(conn: psycopg.Connection[Any], request_id: int) -> list[tuple[str, dict[str, Any]]]:
    """The identity.erased and identity.split events an erasure request wrote to the outbox."""
    return list(conn.execute(queries.CONSOLE_ERASURE_EVENTS, {"id": request_id}))
