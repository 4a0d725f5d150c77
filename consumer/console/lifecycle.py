"""Blocks, unblocks and erasures for the console, each previewed first: the console's calls into the core.

A block's or an unblock's preview applies rule 15 (or 16) to the identities holding the value on the
core's own in-memory graph, under the blocklist as it would then be, and writes nothing: regrouping by
the link graph's components splits them (a block) or joins them (an unblock) exactly as the core does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import orjson
import psycopg

from consumer import queries
from consumer.console import identity
from consumer.core import ContactView, Guardrails, contact_view
from consumer.core.blocking import BlockRefused, block_value, unblock_value
from consumer.core.blocklist import Blocklist
from consumer.core.erasure import erase as erase_value
from consumer.core.graph import Contact, IdentityGraph
from consumer.core.links import components, link_graph

Kind = Literal["email", "phone"]
Reason = Literal["operator", "fan_out", "identity_cap", "builtin"]
REASONS: tuple[Reason, ...] = get_args(Reason)


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


def block(
    conn: psycopg.Connection[Any], kind: Kind, value: str, by: str, guardrails: Guardrails, *, dry_run: bool
) -> Effect:
    preview = _regrouped(conn, kind, value, guardrails, blocked=True)
    if dry_run:
        return preview
    done = block_value(conn, kind, value, guardrails, added_by=by)
    return Effect(done.block_id, preview.before, tuple(v for split in done.splits for v in split.identities))


def unblock(
    conn: psycopg.Connection[Any], block_id: int, by: str, guardrails: Guardrails, *, dry_run: bool
) -> Effect:
    row = conn.execute(queries.CONSOLE_BLOCK_VALUE, [block_id]).fetchone()
    conn.rollback()
    if row is None:
        raise BlockRefused("not_found", f"no active block {block_id}")
    kind, value = row
    # An erased value is kept only as its hash: no row holds it, nothing can merge.
    erased = value is None
    preview = Effect(block_id, (), ()) if erased else _regrouped(conn, kind, value, guardrails, blocked=False)
    if dry_run:
        return preview
    done = unblock_value(conn, block_id, guardrails, removed_by=by)
    return Effect(block_id, preview.before, tuple(view for _, view in done.merges) or preview.before)


def _regrouped(
    conn: psycopg.Connection[Any], kind: Kind, value: str, guardrails: Guardrails, *, blocked: bool
) -> Effect:
    """The identities holding `value` now, and as they would be were it `blocked` or not."""
    with conn.transaction():
        primaries = [p for (p,) in conn.execute(queries.CONSOLE_PRIMARIES_HOLDING[kind], [value])]
        loaded = conn.execute(queries.CLUSTERS_OF_PRIMARIES, [orjson.dumps(primaries).decode()])
        rows = list({row[0]: Contact(*row) for row in loaded}.values())
        bridges = identity.bridges(conn, rows)
        blocklist = Blocklist(conn, guardrails)

        def is_blocked(k: Kind, v: str) -> bool:
            return blocked if (k, v) == (kind, value) else blocklist(k, v)

        graph = IdentityGraph.of(rows)
        before = tuple(graph.view(p) for p in primaries)
        groups = components(rows, link_graph(rows, is_blocked, bridges))
    graph.regroup(groups, datetime.now(UTC))
    return Effect(None, before, tuple(graph.view(group[0].id) for group in groups))


def erase(
    conn: psycopg.Connection[Any], kind: Kind, value: str, by: str, guardrails: Guardrails, *, dry_run: bool
) -> Effect:
    with conn.transaction():
        primaries = [p for (p,) in conn.execute(queries.CONSOLE_PRIMARIES_HOLDING[kind], [value])]
        before = tuple(view for p in primaries if (view := contact_view(conn, p)) is not None)
    done = erase_value(conn, kind, value, by, guardrails, dry_run=dry_run)
    return Effect(done.request_id, before, done.identities, done.erased_contact_ids)


def erasure_events(conn: psycopg.Connection[Any], request_id: int) -> list[tuple[str, dict[str, Any]]]:
    """The identity.erased and identity.split events an erasure request wrote to the outbox."""
    return list(conn.execute(queries.CONSOLE_ERASURE_EVENTS, {"id": request_id}))
