"""Prometheus metrics of the relay, served by prometheus-client when `RELAY_METRICS_PORT` is not 0."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PUBLISHED = Counter("identity_relay_published", "Outbox rows delivered to Kafka.", ["type"])
BACKLOG = Gauge("identity_relay_outbox_backlog", "Outbox rows not published yet.")
LATENCY = Histogram(
    "identity_relay_publish_latency_seconds",
    "From an outbox row's created_at to its successful delivery report.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
LEADER = Gauge("identity_relay_leader", "1 while this process holds the relay lock.")
HEARTBEAT = Gauge(
    "identity_relay_loop_heartbeat_timestamp_seconds",
    "When the publishing loop last went round (a standby's and a retrying relay's too); `identity health "
    "relay` fails when it is stale.",
)
