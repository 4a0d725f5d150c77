"""The reconciliation core: plain functions over a psycopg connection, no Kafka and no HTTP."""

from consumer.core.check import Violation, check_invariants
from consumer.core.graph import ContactView, Merge
from consumer.core.reconcile import (
    IdempotencyKeyReused,
    KeyConflict,
    Request,
    Resolution,
    contact_view,
    reconcile,
    reconcile_batch,
)

__all__ = [
    "ContactView",
    "IdempotencyKeyReused",
    "KeyConflict",
    "Merge",
    "Request",
    "Resolution",
    "Violation",
    "check_invariants",
    "contact_view",
    "reconcile",
    "reconcile_batch",
]
