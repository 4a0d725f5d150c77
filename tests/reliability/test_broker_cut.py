"""The link between the services and the broker cut for several seconds, mid-stream.

A broker of this test's own advertises a TCP proxy's address, so every client (worker, relay, the
test's own producer and reader) reaches it only through the proxy, which drops every connection and
refuses new ones while the link is cut.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumer.local.embedded import free_port, start_broker
from tests.support.database import processed, unpublished
from tests.support.graph import UNGUARDED_ENV
from tests.support.kafka import OutputReader, Record, produce
from tests.support.polling import wait_until
from tests.support.stack import (
    Stack,
    TcpProxy,
    overlapping_checkouts,
    record_figures,
    verify_database,
    verify_outputs,
)
from tests.support.topics import Topics

# Longer than the session timeout (6 s): the broker may drop the worker from its group meanwhile.
CUT_S = 8.0


@pytest.fixture
def proxied_bootstrap(tmp_path: Path) -> Iterator[tuple[str, TcpProxy]]:
    broker_port, proxy_port = free_port(), free_port()
    proxy = TcpProxy(broker_port, proxy_port)
    broker = start_broker(broker_port, log=tmp_path / "tansu.log", advertised_port=proxy_port)
    try:
        yield f"127.0.0.1:{proxy_port}", proxy
    finally:
        broker.stop()
        proxy.close()


def produce_in_background(bootstrap: str, topic: str, records: list[Record]) -> threading.Thread:
    """Produce while the link is cut: the idempotent producer buffers and delivers once it is back."""

    def run() -> None:
        produce(bootstrap, topic, records, timeout=150, **{"message.timeout.ms": 120_000, "log_level": 3})

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_worker_and_relay_recover_from_a_cut_broker_link(
    proxied_bootstrap: tuple[str, TcpProxy], database_url: str, tmp_path: Path, db: psycopg.Connection[Any]
) -> None:
    bootstrap, proxy = proxied_bootstrap
    stack = Stack(
        database_url,
        bootstrap,
        Topics.create(bootstrap, 2),
        tmp_path,
        env={"WORKER_BATCH_SIZE": "50", **UNGUARDED_ENV},
    )
    checkouts = overlapping_checkouts(3000, random.Random(8), emails=2000, phones=2000, prefix="cut")
    half = len(checkouts) // 2
    try:
        stack.start("worker")
        stack.start("relay")
        produce(bootstrap, stack.topics.checkout, [c.record() for c in checkouts[:half]])
        # Cut early: the worker goes on with what it fetched, but cannot commit its offsets meanwhile.
        wait_until(lambda: processed(database_url) >= 50, 60, "progress before the cut", 0.05)

        proxy.cut()
        cut_at = time.monotonic()
        late = produce_in_background(bootstrap, stack.topics.checkout, [c.record() for c in checkouts[half:]])
        # The fault itself lasts CUT_S; nothing waits on it for synchronization.
        time.sleep(CUT_S)
        proxy.restore()
        restored = time.monotonic()

        worker_recovery = wait_until(
            lambda: processed(database_url) == len(checkouts), 120, "every event after the cut"
        )
        relay_recovery = wait_until(lambda: unpublished(database_url) == 0, 120, "every outbox row published")
        late.join(150)
        assert not late.is_alive()
        for service in stack.services:
            assert service.process.poll() is None, f"{service.log_path.name} died"

        figures = verify_database(database_url, checkouts)
        reader = OutputReader(bootstrap, stack.topics.outputs)
        try:
            figures |= verify_outputs(reader, checkouts, database_url)
        finally:
            reader.close()
    finally:
        stack.close()
    record_figures(
        "broker-cut",
        events_in=len(checkouts),
        events_applied=processed(database_url),
        cut_seconds=round(restored - cut_at, 1),
        worker_recovery_s=worker_recovery,
        relay_recovery_s=round(worker_recovery + relay_recovery, 2),
        **figures,
    )
