"""Erasure, the right to be forgotten (DESIGN.md rule 17), on the split machinery of rule 15.

One transaction, under the locks every writer of the value and of its identities takes (so a worker
or an API call touching them at the same moment waits, or is waited for): the live rows holding the
value become tombstones without values, the value is removed from every other table and JSON document,
each affected identity's remaining rows are regrouped into link-graph components, and the request is
logged by keyed hash. `identity.erased` then `identity.split`, both keyed by the former primary, go to
the outbox with it. docs/erasure.md says what the service cannot erase.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from consumer import queries
from consumer.core.blocklist import Guardrails, value_hash
from consumer.core.events import erased_event
from consumer.core.graph import ContactView
from consumer.core.links import Kind
from consumer.core.reconcile import DEFAULT_GUARDRAILS, Transaction, with_identities
from consumer.normalize import Identifiers


@dataclass(frozen=True, slots=True)
class Erasure:
    """What an erasure request did, or would do (a dry run, whose `request_id` is None)."""

    request_id: int | None
    erased_contact_ids: tuple[int, ...]
    former_primary_ids: tuple[int, ...]
    identities: tuple[ContactView, ...]
    """What the affected identities' remaining rows became, oldest primary first per former identity."""

    def document(self) -> dict[str, object]:
        """The answer of POST /erasure-requests (`ErasureResponse`)."""
        return {
            "erasureRequestId": self.request_id,
            "erasedContactIds": list(self.erased_contact_ids),
            "identities": [view.document() for view in self.identities],
        }


class _DryRun(Exception):
    """Raised out of the transaction to roll it back, carrying what it would have done."""

    def __init__(self, erasure: Erasure) -> None:
        super().__init__("dry run")
        self.erasure = erasure


def erase(
    conn: psycopg.Connection[Any],
    kind: Kind,
    value: str,
    requested_by: str,
    guard: Guardrails = DEFAULT_GUARDRAILS,
    *,
    dry_run: bool = False,
) -> Erasure:
    """Erase a normalized email or phone everywhere (rule 17). Idempotent: a value nobody holds any
    more gives empty lists. A dry run does all of it in a transaction that is rolled back."""
    identifiers = Identifiers(value, None) if kind == "email" else Identifiers(None, value)

    def work(tx: Transaction) -> Erasure:
        graph = tx.graph
        erased = sorted(graph.holders(kind, value))
        by_identity: defaultdict[int, list[int]] = defaultdict(list)
        for row_id in erased:
            by_identity[graph.rows[row_id].primary_id].append(row_id)
        formers = sorted(by_identity)
        digest = value_hash(kind, value, guard.hash_key)
        log_row = [kind, digest, requested_by, erased, formers]
        logged = conn.execute(queries.INSERT_ERASURE, log_row).fetchone()
        assert logged is not None
        request_id: int = logged[0]
        for row_id in erased:
            graph.remove(row_id)
        _scrub(conn, kind, value, digest, erased, tx)
        tx.outbox.extend(erased_event(request_id, p, by_identity[p], tx.time) for p in formers)
        splits = tx.guard.split(formers, "erasure", request_id, whole=True)
        done = Erasure(
            None if dry_run else request_id,
            tuple(erased),
            tuple(formers),
            tuple(view for split in splits for view in split.identities),
        )
        if dry_run:
            raise _DryRun(done)
        return done

    try:
        return with_identities(conn, [identifiers], guard, work)
    except _DryRun as rolled_back:
        return rolled_back.erasure


def _scrub(
    conn: psycopg.Connection[Any], kind: Kind, value: str, digest: bytes, erased: list[int], tx: Transaction
) -> None:
    """Remove the value from every table: the rows, the history, stored answers, the outbox."""
    values = {"email": value if kind == "email" else None, "phone": value if kind == "phone" else None}
    conn.execute(queries.ERASE_ROWS, {"ids": erased, "now": tx.now})
    conn.execute(queries.ERASE_FROM_DELETED_ROWS, values)
    conn.execute(queries.ERASE_FROM_MERGES, values)
    conn.execute(queries.ERASE_FROM_BLOCKS, {"hash": digest, "value": value})
    conn.execute(queries.ERASE_FROM_ANSWERS, {"value": value})
    conn.execute(queries.OUTBOX_ERASURE_LOCK)
    spelled = orjson.dumps(value).decode()[1:-1]  # as the payloads' JSON text spells it
    conn.execute(queries.ERASE_FROM_OUTBOX, {"value": value, "spelled": spelled})
