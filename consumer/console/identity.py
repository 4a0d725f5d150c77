"""The identity page's data: rows with provenance, the link graph between them, history, a path.

Read through the core: the link graph is the core's (consumer/core/links.py, the very graph splits and
`identity check` use), under the current blocklist; this module only shapes it for the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
import psycopg

from consumer import queries
from consumer.audit import Action, record_audit
from consumer.clients import Client
from consumer.core import ContactView, Guardrails, contact_view
from consumer.core.blocklist import Blocklist
from consumer.core.links import Link as CoreLink
from consumer.core.links import Row as LinkRow
from consumer.core.links import link_graph, path, spanning_tree, values_of

LinkKind = Literal["email", "phone", "merge"]


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    email: str | None
    phone_number: str | None
    primary: bool
    created_at: datetime
    source: str
    source_event_id: str


@dataclass(frozen=True, slots=True)
class Link:
    """Rows `a` and `b` are linked because they share `value` (for a merge: the email and the phone)."""

    a: int
    b: int
    kind: LinkKind
    value: str

    @property
    def key(self) -> str:
        """The same for both directions: the id of its edge in the drawing."""
        return f"{min(self.a, self.b)}-{max(self.a, self.b)}-{self.kind}"


@dataclass(frozen=True, slots=True)
class HistoryItem:
    at: datetime
    what: str


@dataclass(frozen=True, slots=True)
class Picture:
    view: ContactView
    rows: list[Row]
    links: list[Link]
    """Every link of the identity's graph."""
    tree: list[Link]
    """For each row but the primary, the link that connects it (a spanning tree from the primary)."""
    blocked: list[str]
    """The blocked values its rows hold, as `kind value`."""
    history: list[HistoryItem]
    path: list[Link] | None
    """The links from the `from` row to the `to` row, when a pair was asked for."""


def picture(
    conn: psycopg.Connection[Any], contact_id: int, to: int | None, client: Client, guardrails: Guardrails
) -> Picture | None:
    """The identity holding `contact_id`, or None; with `to`, the path between the two rows.

    Audited like the API's reads (rule 19): a contact read, and an explanation when a path is asked for.
    """
    with conn.transaction():
        found = _picture(conn, contact_id, to, guardrails)
        if found is not None:
            view = found.view
            record_audit(conn, client, Action.CONTACT_READ, [view.primary_id, *view.secondary_ids])
            if to is not None:
                record_audit(conn, client, Action.CONTACT_EXPLAIN, [contact_id, to])
    return found


def _picture(
    conn: psycopg.Connection[Any], contact_id: int, to: int | None, guardrails: Guardrails
) -> Picture | None:
    view = contact_view(conn, contact_id)
    if view is None:
        return None
    rows = [
        Row(id, email, phone, linked is None, created, source, event)
        for id, email, phone, linked, created, source, event in conn.execute(
            queries.CONSOLE_IDENTITY_ROWS, [view.primary_id]
        )
    ]
    ids = [row.id for row in rows]
    blocklist = Blocklist(conn, guardrails)
    values = sorted({v for row in rows for v in values_of(row.email, row.phone_number)})
    blocklist.prefetch(values)
    adjacency = link_graph(rows, blocklist, bridges(conn, rows))
    links = [_link(a, b, why) for a, near in adjacency.items() for b, why in near if a < b]
    tree = [_link(row, up[0], up[1]) for row, up in spanning_tree(adjacency, view.primary_id).items() if up]
    steps = path(adjacency, contact_id, to) if to in ids else None
    return Picture(
        view,
        rows,
        links,
        tree,
        [f"{kind} {value}" for kind, value in values if blocklist(kind, value)],
        _history(conn, ids),
        None if steps is None else [_link(*step) for step in steps],
    )


def bridges(conn: psycopg.Connection[Any], rows: Sequence[LinkRow]) -> list[tuple[str, str]]:
    """The recorded rule-7 merges between these rows' emails and phones: links no row holds."""
    emails = sorted({r.email for r in rows if r.email is not None})
    phones = sorted({r.phone_number for r in rows if r.phone_number is not None})
    params = {"emails": orjson.dumps(emails).decode(), "phones": orjson.dumps(phones).decode()}
    return [(email, phone) for email, phone in conn.execute(queries.MERGE_BRIDGES, params)]


def _link(a: int, b: int, why: CoreLink) -> Link:
    value = f"{why.email} {why.phone}" if why.kind == "merge" else why.email or why.phone or ""
    return Link(a, b, why.kind, value)


def _history(conn: psycopg.Connection[Any], ids: list[int]) -> list[HistoryItem]:
    """Merges, splits and blocks that touched these rows, oldest first."""
    items = [
        HistoryItem(at, f"merge: #{', #'.join(map(str, demoted))} joined #{surviving} ({source} {event})")
        for at, source, event, surviving, demoted in conn.execute(queries.CONSOLE_IDENTITY_MERGES, [ids, ids])
    ]
    splits = conn.execute(queries.CONSOLE_IDENTITY_SPLITS, [ids, ids])
    items += [
        HistoryItem(at, f"split ({cause} #{cause_id}): #{former} became #{', #'.join(map(str, primaries))}")
        for at, cause, cause_id, former, primaries in splits
    ]
    items += [
        HistoryItem(at, f"{kind} blocked (block #{block_id}, {reason}, by {by})")
        for at, block_id, kind, reason, by in conn.execute(queries.CONSOLE_IDENTITY_BLOCKS, [ids])
    ]
    return sorted(items, key=lambda item: item.at)
