"""`identity check`: verify rules 3 and 7 on a live database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from consumer import queries


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    contact_ids: tuple[int, ...]
    """Up to 20 example contact ids (never the personal values themselves)."""
    count: int


def check_invariants(conn: psycopg.Connection[Any]) -> list[Violation]:
    """Every broken invariant with examples; an empty list means the graph is consistent."""
    violations = []
    for rule, statement in queries.CHECKS.items():
        ids = [row[0] for row in conn.execute(statement)]
        if ids:
            violations.append(Violation(rule, tuple(ids[:20]), len(ids)))
    return violations
