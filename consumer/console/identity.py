"""The identity page's data: rows with provenance, the links between them, history, a path.

Read through the core; this module only shapes it for the page and the graph drawing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg

from consumer import queries
from consumer.core import ContactView, contact_view

LinkKind = Literal["email", "phone", "merge"]


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    email: str | None
    phone: str | None
    primary: bool
    created_at: datetime
    source: str
    source_event_id: str


@dataclass(frozen=True, slots=True)
class Link:
    """Row `a` is linked to row `b` because they share `value` (for a merge: the email and the phone)."""

    a: int
    b: int
    kind: LinkKind
    value: str


@dataclass(frozen=True, slots=True)
class HistoryItem:
    at: datetime
    what: str


@dataclass(frozen=True, slots=True)
class Picture:
    view: ContactView
    rows: list[Row]
    links: list[Link]
    history: list[HistoryItem]
    path: list[Link] | None
    """The links from the `to` row to the `from` row, when a pair was asked for."""


def picture(conn: psycopg.Connection[Any], contact_id: int, to: int | None = None) -> Picture | None:
    """The identity holding `contact_id`, or None; with `to`, the path between the two rows."""
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
    links = _spanning_links(rows)
    history = [
        HistoryItem(at, f"merge: #{', #'.join(map(str, demoted))} joined #{surviving} ({source} {event})")
        for at, source, event, surviving, demoted in conn.execute(queries.CONSOLE_IDENTITY_MERGES, [ids, ids])
    ]
    path = _path(links, contact_id, to) if to in ids else None
    return Picture(view, rows, links, history, path)


def _spanning_links(rows: list[Row]) -> list[Link]:
    """Each row linked to the oldest row before it sharing a value, else (a merge of two known values,
    which inserted no row) to the primary. Stand-in pending the explain core (rule 18)."""
    links = []
    for i, row in enumerate(rows[1:], 1):
        earlier = rows[:i]
        link = next(
            (Link(row.id, o.id, "email", row.email) for o in earlier if row.email and o.email == row.email),
            None,
        ) or next(
            (Link(row.id, o.id, "phone", row.phone) for o in earlier if row.phone and o.phone == row.phone),
            None,
        )
        bridge = f"{row.email or ''} {row.phone or ''}".strip()
        links.append(link or Link(row.id, rows[0].id, "merge", bridge))
    return links


def _path(links: list[Link], start: int, goal: int) -> list[Link] | None:
    parent = {link.a: link for link in links}

    def to_root(node: int) -> list[Link]:
        chain = []
        while node in parent:
            chain.append(parent[node])
            node = parent[node].b
        return chain

    up, down = to_root(start), to_root(goal)
    shared = {link.a for link in up} & {link.a for link in down}
    down = [link for link in down if link.a not in shared]
    return [link for link in up if link.a not in shared] + down[::-1]
