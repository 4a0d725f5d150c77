"""Why are these contacts one customer (DESIGN.md rule 18): the link graph of one identity, explained.

Read only, in one snapshot: the identity's rows with provenance, the spanning tree of the link graph
from the primary (each row's link to the rest), the blocked values its rows hold, its history (merges,
splits, blocks, unblocks, erasures; oldest first, in pages) and, on request, the path of shared values
between two of its rows. The document is the same for the API and `identity explain --json`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg

from consumer import queries
from consumer.core.blocklist import Blocklist, Guardrails, value_hash
from consumer.core.graph import Contact, IdentityGraph
from consumer.core.guard import links_of
from consumer.core.links import AGE, Kind, Link, path, spanning_tree, values_of
from consumer.core.reconcile import DEFAULT_GUARDRAILS

HISTORY_PAGE = 1000
"""History entries per page: an identity's history grows without bound, an answer must not."""
CURSOR_PATTERN = r"(\d{1,17})-([0-4])-(\d{1,18})"
"""A history position: microseconds since 1970 (UTC), the entry's rank within an instant, its id."""
CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(slots=True)
class Row(Contact):
    """A live row with its provenance (rule 11)."""

    source: str
    source_event_id: str


class NotInIdentity(ValueError):
    """The `to` contact is not a live row of the same identity."""


class BadCursor(ValueError):
    """A history cursor this service did not hand out."""


def explain(
    conn: psycopg.Connection[Any],
    contact_id: int,
    *,
    to: int | None = None,
    guard: Guardrails = DEFAULT_GUARDRAILS,
    history_after: str | None = None,
    history_limit: int = HISTORY_PAGE,
) -> dict[str, Any] | None:
    """The explanation document (`ExplainResponse`) of the identity holding `contact_id`, or None if no
    live row has that id. Raises `NotInIdentity` for a `to` outside it, `BadCursor` for a bad cursor."""
    after = _parse_cursor(history_after)
    snapshot = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if snapshot:
            conn.execute(queries.SNAPSHOT)
        conn.execute(queries.PREFER_INDEXES, [True])
        rows = sorted((Row(*r) for r in conn.execute(queries.IDENTITY_ROWS, [contact_id])), key=AGE)
        if not rows:
            return None
        if to is not None and to not in {r.id for r in rows}:
            raise NotInIdentity(f"contact {to} is not a live row of the identity of contact {contact_id}")
        blocklist = Blocklist(conn, guard)
        adjacency = links_of(conn, blocklist, rows)
        held = _holders(rows)
        blocked = {v: ids for v, ids in held.items() if blocklist(*v)}
        hashes = {value_hash(*v, guard.hash_key): v for v in held}
        blocks = {
            hashes[bytes(digest)]: (block_id, reason)
            for digest, block_id, reason in conn.execute(
                queries.ACTIVE_BLOCKS, [[value_hash(*v, guard.hash_key) for v in blocked]]
            )
        }
        page = conn.execute(
            queries.IDENTITY_HISTORY,
            {
                "ids": orjson.dumps([r.id for r in rows]).decode(),
                "hashes": list(hashes),
                "after_at": after[0] if after else None,
                "after_rank": after[1] if after else None,
                "after_id": after[2] if after else None,
                "limit": history_limit + 1,
            },
        ).fetchall()
    primary = rows[0].primary_id
    tree = spanning_tree(adjacency, primary) if primary in adjacency else {}
    view = IdentityGraph.of(rows).view(primary)
    more = len(page) > history_limit
    page = page[:history_limit]
    return {
        "contactId": contact_id,
        "contact": view.document(),
        "rows": [_row(r, tree.get(r.id)) for r in rows],
        "blockedValues": [
            {
                "kind": kind,
                "value": value,
                "blockId": blocks.get((kind, value), (None, ""))[0],
                "reason": blocks.get((kind, value), (None, "pattern"))[1],
                "contactIds": sorted(ids),
            }
            for (kind, value), ids in sorted(blocked.items())
        ],
        "history": [entry for *_, entry in page],
        "historyNext": _cursor(*page[-1][:3]) if more else None,
        "path": None if to is None else _path(adjacency, contact_id, to),
    }


def _holders(rows: list[Row]) -> dict[tuple[Kind, str], list[int]]:
    held: defaultdict[tuple[Kind, str], list[int]] = defaultdict(list)
    for r in rows:
        for v in values_of(r.email, r.phone_number):
            held[v].append(r.id)
    return held


def _row(r: Row, parent: tuple[int, Link] | None) -> dict[str, Any]:
    return {
        "id": r.id,
        "email": r.email,
        "phoneNumber": r.phone_number,
        "linkPrecedence": "primary" if r.linked_id is None else "secondary",
        "linkedId": r.linked_id,
        "createdAt": r.created_at.isoformat(),
        "updatedAt": r.updated_at.isoformat(),
        "source": r.source,
        "sourceEventId": r.source_event_id,
        "link": None if parent is None else {"to": parent[0], **_link(parent[1])},
    }


def _link(link: Link) -> dict[str, Any]:
    return {"kind": link.kind, "email": link.email, "phoneNumber": link.phone}


def _path(adjacency: dict[int, list[tuple[int, Link]]], start: int, goal: int) -> dict[str, Any] | None:
    steps = path(adjacency, start, goal)
    if steps is None:
        return None
    return {
        "from": start,
        "to": goal,
        "steps": [{"from": a, "to": b, "link": _link(link)} for a, b, link in steps],
    }


def _cursor(at: datetime, rank: int, entry_id: int) -> str:
    return f"{(at - _EPOCH) // _MICROSECOND}-{rank}-{entry_id}"


def _parse_cursor(cursor: str | None) -> tuple[datetime, int, int] | None:
    """Any string of the cursor's pattern is a position in the history, so only the shape can be wrong."""
    if cursor is None:
        return None
    if (found := CURSOR.fullmatch(cursor)) is None:
        raise BadCursor("not a history cursor from this service")
    micros, rank, entry_id = map(int, found.groups())
    return _EPOCH + micros * _MICROSECOND, rank, entry_id
