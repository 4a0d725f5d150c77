"""Prometheus metrics for the API: requests by route and status, reconciliation outcomes, pool usage.

With several uvicorn workers `run_api` sets PROMETHEUS_MULTIPROC_DIR before the workers start, so
every worker writes its samples there and `/metrics`, whichever worker answers, reports the sum.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from psycopg_pool import ConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("identity_api_requests_total", "HTTP requests answered.", ["method", "route", "status"])
LATENCY = Histogram(
    "identity_api_request_duration_seconds",
    "Time from receiving a request to sending the end of its response.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
IN_PROGRESS = Gauge(
    "identity_api_requests_in_progress",
    "HTTP requests being handled, including the scrape that reports it.",
    multiprocess_mode="livesum",
)
RECONCILIATIONS = Counter(
    "identity_api_reconciliations_total",
    "POST /identify results by outcome; `replayed` is a retried Idempotency-Key answered from storage.",
    ["outcome"],
)
BATCH_SIZE = Histogram(
    "identity_api_batch_size",
    "POST /identify calls applied together in one transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
BATCH_LINGER = Histogram(
    "identity_api_batch_linger_seconds",
    "How long a POST /identify batch waited for the calls its process last had at once; only batches "
    "that found fewer queued. At API_BATCH_LINGER_MS, they did not come.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 1.0),
)
POOL_CONNECTIONS = Gauge(
    "identity_api_db_pool_connections",
    "Database pool connections: `open` (idle or in use), `idle`, and `max`.",
    ["state"],
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "identity_api_db_pool_requests_waiting",
    "Requests queued for a pooled connection.",
    multiprocess_mode="livesum",
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
UNMATCHED_ROUTE = "unmatched"
# Clients choose the method and path, so labels take only known values: the series count stays bounded.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def multiprocess_mode() -> bool:
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


def render() -> bytes:
    if not multiprocess_mode():
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def record_pool(pool: ConnectionPool[Any]) -> None:
    stats = pool.get_stats()
    POOL_CONNECTIONS.labels("open").set(stats["pool_size"])
    POOL_CONNECTIONS.labels("idle").set(stats["pool_available"])
    POOL_CONNECTIONS.labels("max").set(stats["pool_max"])
    POOL_WAITING.set(stats["requests_waiting"])


def process_exited() -> None:
    """Drop this worker's live gauges from the shared directory (multiprocess mode only)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class MetricsMiddleware:
    """Plain ASGI (not BaseHTTPMiddleware, which costs a task per request); labels by route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        IN_PROGRESS.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            IN_PROGRESS.dec()
            route = scope.get("route")
            method = scope["method"] if scope["method"] in _METHODS else "other"
            labels = (method, getattr(route, "path", UNMATCHED_ROUTE), str(status))
            REQUESTS.labels(*labels).inc()
            LATENCY.labels(*labels).observe(time.perf_counter() - start)
