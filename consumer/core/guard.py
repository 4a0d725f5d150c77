"""Rules 12-15 inside a transaction: blocked values, automatic blocks, and splits.

`Guard.admit` runs before each input is applied: it drops the input's blocked values (rule 12), blocks
a value that would fan out to too many values of the other kind (rule 13) and, while the input would
take its identity past the cap, blocks that identity's most connected value (rule 14). Every block
splits the identities holding the value into the components of the link graph (rule 15).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
import psycopg

from consumer import queries
from consumer.core.blocklist import Blocklist, Guardrails
from consumer.core.graph import Contact, ContactView, IdentityGraph
from consumer.core.links import Adjacency, Kind, Row, components, link_graph, values_of

Value = tuple[Kind, str]
CauseType = Literal["value_blocked", "erasure"]


@dataclass(frozen=True, slots=True)
class Split:
    """One identity divided: announced as `identity.split` and kept in the split log."""

    cause_type: CauseType
    cause_id: int
    former_primary_id: int
    identities: tuple[ContactView, ...]


class Guard:
    def __init__(
        self,
        conn: psycopg.Connection[Any],
        graph: IdentityGraph,
        blocklist: Blocklist,
        limits: Guardrails,
        now: datetime,
    ) -> None:
        self.conn = conn
        self.graph = graph
        self.blocklist = blocklist
        self.limits = limits
        self.now = now
        self._splits: list[Split] = []
        self.bridges: list[tuple[str, str]] = []
        """Merges of this transaction, not in the merge log yet (rule 15 needs them as links)."""

    def admit(self, email: str | None, phone: str | None) -> tuple[str | None, str | None]:
        """The input's values that may be applied, after any automatic block it triggers."""
        email, phone = self._allowed(email, phone)
        if email is not None and phone is not None:
            pairs: tuple[tuple[Value, str], ...] = ((("phone", phone), email), (("email", email), phone))
            fanned = [value for value, other in pairs if self._fans_out(value, other)]
            if fanned:
                for kind, value in fanned:
                    self.block(kind, value, "fan_out", "rule:max_links_per_value")
                email, phone = self._allowed(email, phone)
        while (email is not None or phone is not None) and (victim := self._over_cap(email, phone)):
            self.block(*victim, "identity_cap", "rule:max_identifiers_per_identity")
            email, phone = self._allowed(email, phone)
        return email, phone

    def block(
        self, kind: Kind, value: str, reason: str, added_by: str, note: str | None = None
    ) -> tuple[int, list[Split]] | None:
        """Block `value` and split the identities holding it: the block id and the splits, or None when
        the value was blocked already."""
        graph = self.graph
        primaries = sorted({graph.rows[i].primary_id for i in graph.holders(kind, value)})
        block_id, created = self.blocklist.add(
            kind, value, reason, added_by, primaries[0] if primaries else None, note
        )
        return (block_id, self.split(primaries, "value_blocked", block_id)) if created else None

    def split(
        self, primary_ids: Iterable[int], cause_type: CauseType, cause_id: int, *, whole: bool = False
    ) -> list[Split]:
        """Regroup each identity's rows into the components of the link graph (rule 15).

        With `whole`, an identity that stays one component is regrouped and announced too: an erasure
        changed it (its primary may be gone), and downstream learns what is left.
        """
        made = []
        for primary_id in primary_ids:
            rows = self.graph.members(primary_id)
            groups = components(rows, self.links(rows))
            if len(groups) > 1 or (whole and groups):
                self.graph.regroup(groups, self.now)
                views = tuple(self.graph.view(group[0].id) for group in groups)
                made.append(Split(cause_type, cause_id, primary_id, views))
        self._splits.extend(made)
        return made

    def take_splits(self) -> list[Split]:
        """The splits made since the last call."""
        splits, self._splits = self._splits, []
        return splits

    def links(self, rows: list[Contact]) -> Adjacency:
        """The link graph of these rows: shared values, and merges recorded in the log or this transaction."""
        return links_of(self.conn, self.blocklist, rows, self.bridges)

    def _allowed(self, email: str | None, phone: str | None) -> tuple[str | None, str | None]:
        return (
            None if email is None or self.blocklist("email", email) else email,
            None if phone is None or self.blocklist("phone", phone) else phone,
        )

    def _fans_out(self, value: Value, other: str) -> bool:
        """Would linking `value` to `other` link it to more than the limit of values of the other kind?"""
        limit = self.limits.max_links_per_value
        holders = self.graph.holders(*value)
        if len(holders) < limit:  # cheap bound: each row holds one counterpart at most
            return False
        other_kind: Kind = "email" if value[0] == "phone" else "phone"
        rows = [self.graph.rows[i] for i in holders]
        counterparts = {_value_of(r, other_kind) for r in rows} - {None} | {other}
        if len(counterparts) <= limit:
            return False
        return sum(not self.blocklist(other_kind, c) for c in counterparts if c is not None) > limit

    def _over_cap(self, email: str | None, phone: str | None) -> Value | None:
        """The value to block so that the input fits the identity cap, or None if it fits."""
        graph = self.graph
        matched = set(graph.holders("email", email) if email else ()) | set(
            graph.holders("phone", phone) if phone else ()
        )
        return self.over_cap({graph.rows[i].primary_id for i in matched}, values_of(email, phone))

    def over_cap(self, primary_ids: Iterable[int], incoming: Iterable[Value] = ()) -> Value | None:
        """The value rule 14 blocks so that these identities joined, with `incoming`, fit the cap: the
        one with the most distinct counterparts (ties: the lowest value); None if they fit."""
        cap = self.limits.max_identifiers_per_identity
        primary_ids, incoming = list(primary_ids), set(incoming)
        # Cheap bound, counted before any row is gathered: each row holds two values at most.
        if 2 * sum(map(self.graph.size, primary_ids)) + len(incoming) <= cap:
            return None
        rows = [r for p in primary_ids for r in self.graph.members(p)]
        held = {v for r in rows for v in r.values()}
        if len(held | incoming) <= cap:
            return None
        self.blocklist.prefetch(held)
        live = {v for v in held if not self.blocklist(*v)}
        if len(live | incoming) <= cap:
            return None
        counterparts: defaultdict[Value, set[Value]] = defaultdict(set)
        for r in rows:
            if r.email is not None and r.phone_number is not None:
                e: Value = ("email", r.email)
                p: Value = ("phone", r.phone_number)
                if e in live and p in live:
                    counterparts[e].add(p)
                    counterparts[p].add(e)
        return min(live, key=lambda v: (-len(counterparts[v]), v[1], v[0]))


def links_of(
    conn: psycopg.Connection[Any],
    blocklist: Blocklist,
    rows: Sequence[Row],
    bridges: Iterable[tuple[str, str]] = (),
) -> Adjacency:
    """The link graph of `rows`: their shared non-blocked values, and the recorded merges bridging them
    (plus `bridges`, merges not in the merge log yet)."""
    emails = sorted({r.email for r in rows if r.email is not None})
    phones = sorted({r.phone_number for r in rows if r.phone_number is not None})
    blocklist.prefetch([*(("email", e) for e in emails), *(("phone", p) for p in phones)])
    recorded = conn.execute(
        queries.MERGE_BRIDGES,
        {"emails": orjson.dumps(emails).decode(), "phones": orjson.dumps(phones).decode()},
    ).fetchall()
    return link_graph(rows, blocklist, [*recorded, *bridges])


def _value_of(row: Contact, kind: Kind) -> str | None:
    return row.email if kind == "email" else row.phone_number
