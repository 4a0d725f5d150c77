"""The pipeline health page, fed by a real worker process's metrics endpoint and the outbox table."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from consumer.core import Guardrails, reconcile
from tests.console.conftest import Browser
from tests.core.helpers import request
from tests.support.kafka import Record, envelope, produce, structured
from tests.support.stack import Stack

TILL_PHONE = "5550199"


@pytest.fixture
def worker(stack: Stack, worker_metrics_port: int) -> Stack:
    """A worker serving its metrics where the console looks; no relay, so the outbox backlog stays."""
    stack.start("worker", WORKER_METRICS_PORT=str(worker_metrics_port))
    return stack


def test_pipeline_health_shows_the_workers_figures_and_the_outbox(
    browser: Browser, worker: Stack, admin_key: str, db: psycopg.Connection[Any]
) -> None:
    browser.sign_in(admin_key)
    browser.open("/console/pipeline")
    produce(
        worker.bootstrap,
        worker.topics.checkout,
        [structured(envelope("p-1", "pipeline@example.com", "5550100")), Record(b"not json", b"k")],
    )
    # The panel refreshes itself (every second here) until the worker has dead-lettered the bad record.
    browser.wait.until(lambda _: "undecodable" in browser.text_of("dead-letters"))
    assert browser.text_of("dead-letters").splitlines()[1:] == ["undecodable\t1"]
    backlog = db.execute("SELECT count(*) FROM outbox_event WHERE published_at IS NULL").fetchone()
    assert backlog is not None
    assert backlog[0] >= 1
    browser.wait.until(lambda _: browser.text_of("outbox-backlog") == str(backlog[0]))
    # The worker reports its lag as it polls: it reaches 0 once both records are consumed.
    browser.wait.until(lambda _: browser.text_of("worker-lag") == "0")
    assert browser.text_of("outbox-oldest").endswith((" s", " min", " h"))
    # Each refresh adds a point to every chart.
    points = "return Chart.getChart(document.querySelector('canvas')).data.labels.length"
    browser.wait.until(lambda d: d.execute_script(points) >= 2)
    browser.screenshot("pipeline", docs=True)


def test_recent_automatic_blocks_and_an_unreachable_worker(
    browser: Browser, admin_key: str, db: psycopg.Connection[Any]
) -> None:
    # A till phone typed for every order: its 21st distinct email blocks it (rule 13, fan_out).
    limit = Guardrails().max_links_per_value
    for i in range(limit + 1):
        reconcile(db, request(f"shopper{i}@hillvalley.edu", TILL_PHONE, event=f"till-{i}"))
    browser.sign_in(admin_key)
    browser.open("/console/pipeline")
    assert browser.text_of("worker-lag") == "unreachable"
    assert "metrics endpoint does not answer" in browser.text()
    (block,) = browser.text_of("auto-blocks").splitlines()[1:]
    assert "phone \u2022\u2022\u202299" in block
    assert "fan_out" in block
    assert TILL_PHONE not in browser.text(), "values are masked"
