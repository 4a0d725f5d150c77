"""Real output events, built by the reconciliation core's own event code from a small story."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from consumer.core.events import OutboxEvent, outbox_events
from consumer.core.graph import IdentityGraph

STORY = [
    ("ada@example.com", "111"),  # created_primary
    ("bob@example.com", "222"),  # created_primary
    ("bob@example.com", "111"),  # merged: bob's cluster joins ada's
    ("ada@example.com", "333"),  # created_secondary
    ("ada@example.com", None),  # matched
]


def story_events() -> list[OutboxEvent]:
    graph = IdentityGraph()
    ids = itertools.count(1)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events: list[OutboxEvent] = []
    for n, (email, phone) in enumerate(STORY):
        at = start + timedelta(minutes=n)
        applied = graph.apply(email, phone, at, at, lambda: next(ids))
        events += outbox_events("urn:test", f"evt-{n}", applied, at.isoformat())
    return events
