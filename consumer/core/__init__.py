"""The reconciliation core: plain functions over a psycopg connection, no Kafka and no HTTP."""

from consumer.core.blocklist import Guardrails
from consumer.core.check import Violation, check_invariants
from consumer.core.graph import ContactView, Merge
from consumer.core.reconcile import (
    BlockedInput,
    IdempotencyKeyReused,
    IdentifiersBlocked,
    Input,
    KeyConflict,
    Resolution,
    Result,
    contact_view,
    reconcile,
    reconcile_batch,
    reconcile_ready,
)

__all__ = [
    "BlockedInput",
    "ContactView",
    "Guardrails",
    "IdempotencyKeyReused",
    "IdentifiersBlocked",
    "Input",
    "KeyConflict",
    "Merge",
    "Resolution",
    "Result",
    "Violation",
    "check_invariants",
    "contact_view",
    "reconcile",
    "reconcile_batch",
    "reconcile_ready",
]
