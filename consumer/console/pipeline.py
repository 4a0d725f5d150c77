"""Pipeline health: the outbox from its table, the worker from its Prometheus endpoint, recent auto-blocks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from consumer import queries

SCRAPE_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class WorkerStats:
    lag: float
    events_processed: float
    dead_letters: dict[str, float]


@dataclass(frozen=True, slots=True)
class AutoBlock:
    kind: str
    value: str | None
    reason: str
    identity_id: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Health:
    at: float
    outbox_backlog: int
    oldest_unpublished_s: float | None
    worker: WorkerStats | None
    """None when the worker's metrics endpoint does not answer."""
    events_per_s: float | None
    auto_blocks: list[AutoBlock]

    def document(self) -> dict[str, object]:
        """The figures the charts plot, as JSON."""
        return {
            "at": self.at,
            "outboxBacklog": self.outbox_backlog,
            "oldestUnpublishedSeconds": self.oldest_unpublished_s,
            "workerLag": None if self.worker is None else self.worker.lag,
            "eventsPerSecond": self.events_per_s,
            "deadLetters": None if self.worker is None else self.worker.dead_letters,
        }


@dataclass(slots=True)
class RateMeter:
    """Events per second between two scrapes of the worker's counter, whoever asked for them."""

    last: tuple[float, float] | None = field(default=None)

    def rate(self, at: float, total: float) -> float | None:
        previous, self.last = self.last, (at, total)
        if previous is None or at <= previous[0] or total < previous[1]:
            return None  # first sample, or the worker restarted and its counter began again
        return (total - previous[1]) / (at - previous[0])


def outbox_health(conn: psycopg.Connection[Any]) -> tuple[int, float | None]:
    backlog, oldest = conn.execute(queries.OUTBOX_HEALTH).fetchone() or (0, None)
    return int(backlog), oldest


def recent_auto_blocks(conn: psycopg.Connection[Any]) -> list[AutoBlock]:
    return [AutoBlock(*row) for row in conn.execute(queries.CONSOLE_RECENT_AUTO_BLOCKS)]


async def worker_stats(url: str) -> WorkerStats | None:
    try:
        async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S) as client:
            response = await client.get(url)
            response.raise_for_status()
    except httpx.HTTPError:
        return None
    lag = processed = 0.0
    dead_letters: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "identity_worker_consumer_lag":
                lag += sample.value
            elif sample.name == "identity_worker_events_processed_total":
                processed += sample.value
            elif sample.name == "identity_worker_dead_letters_total":
                reason = sample.labels.get("reason", "unknown")
                dead_letters[reason] = dead_letters.get(reason, 0.0) + sample.value
    return WorkerStats(lag, processed, dead_letters)
