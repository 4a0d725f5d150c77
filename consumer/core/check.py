"""`identity check`: verify the invariants of rules 3, 7 and 12-15 on a live database."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import psycopg

from consumer import queries
from consumer.core.blocklist import Blocklist, Guardrails
from consumer.core.graph import Contact
from consumer.core.links import Kind, components, link_graph

SHARED = {"email": "email shared by two clusters", "phone": "phone number shared by two clusters"}
NOT_ONE_COMPONENT = "identity is not one connected component of the link graph"
OVER_CAP = "identity holds more values than MAX_IDENTIFIERS_PER_IDENTITY"


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    contact_ids: tuple[int, ...]
    """Up to 20 example contact ids (never the personal values themselves)."""
    count: int


def check_invariants(conn: psycopg.Connection[Any], guard: Guardrails | None = None) -> list[Violation]:
    """Every broken invariant with examples; an empty list means the graph is consistent.

    The link-graph checks read every live row into memory: an operator's tool, not a hot path.
    """
    found: dict[str, list[int]] = {}
    for rule, statement in queries.CHECKS.items():
        found[rule] = [row[0] for row in conn.execute(statement)]
    found.update(_link_graph_violations(conn, guard or Guardrails()))
    return [Violation(rule, tuple(ids[:20]), len(ids)) for rule, ids in found.items() if ids]


def _link_graph_violations(conn: psycopg.Connection[Any], guard: Guardrails) -> dict[str, list[int]]:
    rows = [Contact(*row) for row in conn.execute(queries.LIVE_CONTACTS)]
    bridges = conn.execute(queries.ALL_MERGE_BRIDGES).fetchall()
    blocklist = Blocklist(conn, guard)
    blocklist.prefetch(
        [("email", r.email) for r in rows if r.email is not None]
        + [("phone", r.phone_number) for r in rows if r.phone_number is not None]
    )
    shared: dict[str, set[int]] = {"email": set(), "phone": set()}
    holders: dict[tuple[Kind, str], dict[int, int]] = defaultdict(dict)
    values: defaultdict[int, set[tuple[Kind, str]]] = defaultdict(set)
    for row in rows:
        for value in row.values():
            if not blocklist(*value):
                holders[value].setdefault(row.primary_id, row.id)
                values[row.primary_id].add(value)
    for (kind, _), by_identity in holders.items():
        if len(by_identity) > 1:
            shared[kind].add(min(by_identity.values()))
    spanning: set[int] = set()
    pieces: Counter[int] = Counter()
    for component in components(rows, link_graph(rows, blocklist, bridges)):
        identities = {row.primary_id for row in component}
        pieces.update(identities)
        if len(identities) > 1:
            spanning |= identities
    split_identities = spanning | {primary for primary, n in pieces.items() if n > 1}
    cap = guard.max_identifiers_per_identity
    return {
        SHARED["email"]: sorted(shared["email"]),
        SHARED["phone"]: sorted(shared["phone"]),
        NOT_ONE_COMPONENT: sorted(split_identities),
        OVER_CAP: sorted(primary for primary, held in values.items() if len(held) > cap),
    }
