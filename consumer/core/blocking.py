"""Operators' side of the blocklist (rules 12-16): block, unblock, list, and scan old data.

Each operation runs under the same locks as reconciliation (`with_identities`), so it is safe against
workers and API calls writing the same identities at the same moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from consumer import queries
from consumer.core.blocklist import Guardrails, junk_value
from consumer.core.events import EVENT_SOURCE, merged_event
from consumer.core.graph import ContactView, Merge
from consumer.core.guard import Split, Value
from consumer.core.links import Kind, components
from consumer.core.reconcile import Transaction, with_identities
from consumer.normalize import Identifiers

UNBLOCK_SOURCE = f"{EVENT_SOURCE}:unblock"


class BlockRefused(Exception):
    """The operation cannot be done as asked; `code` is a short machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class BlockedValue:
    id: int
    kind: str
    value: str | None
    """None once the value was erased (rule 17): only its keyed hash is kept."""
    reason: str
    note: str | None
    added_by: str
    identity_id: int | None
    created_at: datetime
    removed_at: datetime | None
    removed_by: str | None


@dataclass(frozen=True, slots=True)
class BlockResult:
    block_id: int
    splits: tuple[Split, ...]


@dataclass(frozen=True, slots=True)
class UnblockResult:
    block_id: int
    merges: tuple[tuple[Merge, ContactView], ...]


@dataclass(frozen=True, slots=True)
class ScanResult:
    blocks: tuple[tuple[Kind, str, str, BlockResult], ...]
    """(kind, value, reason, result) of every block the scan made, in order."""


def block_value(
    conn: psycopg.Connection[Any],
    kind: Kind,
    value: str,
    guard: Guardrails,
    *,
    added_by: str,
    note: str | None = None,
    reason: str = "operator",
) -> BlockResult:
    """Block a normalized value and split the identities holding it (rules 12 and 15)."""
    if guard.junk_patterns and junk_value(kind, value):
        raise BlockRefused("already_blocked", "the value matches the built-in junk patterns already")

    def work(tx: Transaction) -> BlockResult:
        made = tx.guard.block(kind, value, reason, added_by, note)
        if made is None:
            raise BlockRefused("already_blocked", "the value is blocked already")
        return BlockResult(made[0], tuple(made[1]))

    return with_identities(conn, [_identifiers(kind, value)], guard, work)


def unblock_value(
    conn: psycopg.Connection[Any], block_id: int, guard: Guardrails, *, removed_by: str
) -> UnblockResult:
    """Remove a block and merge again, by rule 7, the identities its value links (rule 16)."""
    block = _active_block(conn, block_id)
    if block.value is None:  # erased: no row holds it any more, nothing to merge
        with conn.transaction():
            removed = conn.execute(queries.REMOVE_BLOCK, [removed_by, block_id]).fetchone()
        if removed is not None and guard.blocked_cache is not None:  # only its hash is left to forget
            guard.blocked_cache.discard(bytes(removed[0]))
        return UnblockResult(block_id, ())
    kind: Kind = "email" if block.kind == "email" else "phone"
    value = block.value
    # Recorded merges of the value are links again once it is unblocked: their identities join too.
    counterparts = [
        _identifiers("phone" if kind == "email" else "email", other)
        for (other,) in conn.execute(queries.MERGE_COUNTERPARTS[kind], [value])
    ]
    conn.rollback()

    def work(tx: Transaction) -> UnblockResult:
        if tx.conn.execute(queries.REMOVE_BLOCK, [removed_by, block_id]).fetchone() is None:
            raise BlockRefused("not_found", f"no active block {block_id}")
        tx.blocklist.forget(kind, value)
        graph = tx.graph
        rows = list(graph.rows.values())
        merges = []
        for group in components(rows, tx.guard.links(rows)):
            primaries = {row.primary_id for row in group}
            merge = graph.join(primaries, tx.now) if len(primaries) > 1 else None
            if merge is None:
                continue
            view = graph.view(merge.surviving_primary_id)
            held = len(view.emails) + len(view.phone_numbers)
            if held > guard.max_identifiers_per_identity:
                raise BlockRefused(
                    "over_identity_cap",
                    f"unblocking would merge an identity of {held} values, over the cap of "
                    f"{guard.max_identifiers_per_identity} (MAX_IDENTIFIERS_PER_IDENTITY)",
                )
            event_id = f"{block_id}:{merge.surviving_primary_id}"
            tx.record_merge(UNBLOCK_SOURCE, event_id, _identifiers(kind, value), merge)
            tx.outbox.append(merged_event(UNBLOCK_SOURCE, event_id, merge, tx.time, view.document()))
            merges.append((merge, view))
        return UnblockResult(block_id, tuple(merges))

    return with_identities(conn, [_identifiers(kind, value), *counterparts], guard, work)


def list_blocks(
    conn: psycopg.Connection[Any],
    *,
    reason: str | None = None,
    after_id: int = 0,
    limit: int = 100,
    include_removed: bool = False,
) -> list[BlockedValue]:
    """Blocks by id, from `after_id` on (keyset pagination)."""
    with conn.cursor(row_factory=class_row(BlockedValue)) as cursor:
        cursor.execute(queries.LIST_BLOCKS, [after_id, reason, reason, include_removed, limit])
        blocks = cursor.fetchall()
    conn.rollback()
    return blocks


def guard_scan(conn: psycopg.Connection[Any], guard: Guardrails, *, dry_run: bool = False) -> ScanResult:
    """Apply rules 13-15 to data stored before the guardrails: block fan-out values, then the most
    linked values of identities over the cap, splitting as it goes. With `dry_run`, report only.

    One transaction: it blocks, splits and announces everything or nothing.
    """
    made: list[tuple[Kind, str, str, BlockResult]] = []

    def block(kind: Kind, value: str, reason: str) -> bool:
        try:
            result = block_value(conn, kind, value, guard, added_by="identity guard scan", reason=reason)
        except BlockRefused:  # blocked already, by a block or the junk patterns
            return False
        made.append((kind, value, reason, result))
        return True

    with conn.transaction(force_rollback=dry_run):
        fanned = conn.execute(queries.FAN_OUT_VALUES, [guard.max_links_per_value] * 2).fetchall()
        for kind, value in fanned:
            block(kind, value, "fan_out")
        blocked = True
        while blocked:  # each block splits an identity: look again at what is still over the cap
            over = conn.execute(queries.IDENTITIES_OVER_CAP, [guard.max_identifiers_per_identity]).fetchall()
            victims = [v for (primary_id,) in over if (v := _most_linked(conn, primary_id, guard))]
            blocked = any([block(*victim, "identity_cap") for victim in victims])
    return ScanResult(tuple(made))


def _most_linked(conn: psycopg.Connection[Any], primary_id: int, guard: Guardrails) -> Value | None:
    """The value rule 14 blocks in this identity, or None when its unblocked values fit the cap."""
    row = conn.execute(queries.CONTACT_VALUES, [primary_id]).fetchone()
    if row is None:
        return None
    return with_identities(conn, [Identifiers(*row)], guard, lambda tx: tx.guard.over_cap([primary_id]))


def _active_block(conn: psycopg.Connection[Any], block_id: int) -> BlockedValue:
    blocks = [b for b in list_blocks(conn, after_id=block_id - 1, limit=1) if b.id == block_id]
    if not blocks:
        raise BlockRefused("not_found", f"no active block {block_id}")
    return blocks[0]


def _identifiers(kind: Kind, value: str) -> Identifiers:
    return Identifiers(value, None) if kind == "email" else Identifiers(None, value)
