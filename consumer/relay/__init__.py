"""`identity relay`: publish the transactional outbox to the output topics (see `consumer.relay.relay`)."""

from __future__ import annotations

import signal

from prometheus_client import start_http_server

from consumer import heap
from consumer.config import Settings
from consumer.relay.relay import OutboxRelay, PublishFailed

__all__ = ["OutboxRelay", "PublishFailed", "run_relay"]


def run_relay(settings: Settings) -> int:
    """`identity relay`: SIGTERM or SIGINT finishes the current round (flush, mark), then exits 0."""
    relay = OutboxRelay(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: relay.stop.set())
    if settings.relay_metrics_port:
        start_http_server(settings.relay_metrics_port, settings.metrics_host)
    heap.settle()
    return relay.run()
