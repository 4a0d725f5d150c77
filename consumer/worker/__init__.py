"""`identity worker`: consume checkout events, reconcile them, dead-letter what cannot be used."""

from __future__ import annotations

import signal

import structlog
from prometheus_client import start_http_server

from consumer import heap
from consumer.config import Settings
from consumer.worker.worker import Worker

__all__ = ["Worker", "run_worker"]

log = structlog.get_logger(__name__)


def run_worker(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT (exit 0 after draining and committing) or a fatal error (exit 1)."""
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, settings.metrics_host)
    worker = Worker(settings)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    heap.settle()
    try:
        worker.run()
    except Exception:
        log.exception("worker failed")
        return 1
    return 0
