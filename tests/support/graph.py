"""The answer every identity graph must equal: connected components of the identifiers seen together."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg

from consumer.core import Guardrails


def identifier_keys(email: object, phone: object) -> list[str]:
    """Emails and phones in one namespace ("e:..." and "p:..."), for union-finds over identifiers."""
    return [key for value, key in ((email, f"e:{email}"), (phone, f"p:{phone}")) if value]


@dataclass
class UnionFind:
    parent: dict[str, str] = field(default_factory=dict)

    def find(self, key: str) -> str:
        while (up := self.parent.setdefault(key, key)) != key:
            self.parent[key] = self.parent.setdefault(up, up)
            key = up
        return key

    def union(self, keys: list[str]) -> None:
        """Register every key and join them all into one component."""
        roots = [self.find(k) for k in keys]
        for root in roots[1:]:
            self.parent[root] = roots[0]

    def components(self) -> set[frozenset[str]]:
        groups: dict[str, set[str]] = {}
        for key in list(self.parent):
            groups.setdefault(self.find(key), set()).add(key)
        return {frozenset(g) for g in groups.values()}


# For tests that compare the identities with plain connected components of random pairs: limits
# that the guardrails (rules 13-14) never reach, for the worker's environment and for check_invariants.
UNGUARDED_ENV = {"MAX_LINKS_PER_VALUE": "1000000000", "MAX_IDENTIFIERS_PER_IDENTITY": "1000000000"}
UNGUARDED = Guardrails(max_links_per_value=10**9, max_identifiers_per_identity=10**9)


def components(pairs: Iterable[tuple[object, object]]) -> set[frozenset[str]]:
    """Connected components of the (email, phone) pairs, as sets of "e:email" and "p:phone"."""
    union_find = UnionFind()
    for email, phone in pairs:
        union_find.union(identifier_keys(email, phone))
    return union_find.components()


def clusters(database_url: str) -> set[frozenset[str]]:
    """The identity graph's clusters (live rows), as sets of "e:email" and "p:phone"."""
    groups: dict[int, set[str]] = {}
    with psycopg.connect(database_url) as conn:
        for primary, email, phone in conn.execute(
            "SELECT coalesce(linked_id, id), email, phone_number FROM contact WHERE deleted_at IS NULL"
        ):
            groups.setdefault(primary, set()).update(identifier_keys(email, phone))
    return {frozenset(g) for g in groups.values()}
