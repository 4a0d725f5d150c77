"""The pipeline health page, fed by a real worker process's metrics endpoint and the outbox table."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.console.conftest import Browser
from tests.support.kafka import Record, envelope, produce, structured
from tests.support.stack import Stack


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
    browser.wait.until(lambda d: "undecodable" in d.find_element("id", "dead-letters").text)
    assert browser.find("#dead-letters").text.splitlines()[1:] == ["undecodable 1"]
    backlog = db.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()
    assert backlog is not None and backlog[0] >= 1
    browser.wait.until(lambda d: d.find_element("id", "outbox-backlog").text == str(backlog[0]))
    # The worker reports its lag as it polls: it reaches 0 once both records are consumed.
    browser.wait.until(lambda d: d.find_element("id", "worker-lag").text == "0")
    assert browser.find("#outbox-oldest").text.endswith((" s", " min", " h"))
    # Each refresh adds a point to every chart.
    points = "return Chart.getChart(document.querySelector('canvas')).data.labels.length"
    browser.wait.until(lambda d: d.execute_script(points) >= 2)
    browser.screenshot("pipeline", docs=True)


def test_the_page_says_when_the_workers_metrics_do_not_answer(browser: Browser, admin_key: str) -> None:
    browser.sign_in(admin_key)
    browser.open("/console/pipeline")
    assert browser.find("#worker-lag").text == "unreachable"
    assert "metrics endpoint does not answer" in browser.text()
