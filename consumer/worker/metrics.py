"""Prometheus metrics of the worker, served by prometheus-client when `WORKER_METRICS_PORT` is not 0."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONSUMER_LAG = Gauge(
    "identity_worker_consumer_lag",
    "Records between the partition's high watermark and the worker's position.",
    ["topic", "partition"],
)
EVENTS_PROCESSED = Counter(
    "identity_worker_events_processed_total", "Records consumed and finished (reconciled or dead-lettered)."
)
OUTCOMES = Counter(
    "identity_worker_outcomes_total",
    "Finished records by outcome: the reconciliation outcome, duplicate, or dead_lettered.",
    ["outcome"],
)
DEAD_LETTERS = Counter(
    "identity_worker_dead_letters_total", "Records delivered to the dead-letter topic.", ["reason"]
)
RETRIES = Counter(
    "identity_worker_retries_total", "Retries after a transient failure, by operation.", ["operation"]
)
REBALANCES = Counter(
    "identity_worker_rebalance_events_total", "Partitions assigned, revoked or lost.", ["kind"]
)
BATCH_SIZE = Histogram(
    "identity_worker_batch_size",
    "Records per consumed batch.",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
BATCH_DURATION = Histogram(
    "identity_worker_batch_duration_seconds",
    "Time from consuming a batch to storing its offsets, retries included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HEARTBEAT = Gauge(
    "identity_worker_loop_heartbeat_timestamp_seconds",
    "When the poll loop last went round (it does while waiting out an outage too); `identity health "
    "worker` fails when it is stale.",
)
