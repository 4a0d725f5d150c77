from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumer.local.embedded import create_topics
from tests.worker.support import WorkerProcess

StartWorker = Callable[..., WorkerProcess]


@dataclass(frozen=True)
class Topics:
    checkout: str
    dlq: str
    group: str
    partitions: int

    def env(self) -> dict[str, str]:
        return {"CHECKOUT_TOPIC": self.checkout, "DLQ_TOPIC": self.dlq, "KAFKA_GROUP_ID": self.group}


@pytest.fixture
def partitions() -> int:
    """Partitions of the test's input topic; override with `@pytest.mark.parametrize` or a fixture."""
    return 1


@pytest.fixture
def topics(kafka_bootstrap: str, partitions: int) -> Topics:
    suffix = uuid.uuid4().hex[:10]
    names = Topics(f"checkout-{suffix}", f"checkout-{suffix}.dlq", f"worker-{suffix}", partitions)
    create_topics(kafka_bootstrap, {names.checkout: partitions, names.dlq: 1})
    return names


@pytest.fixture
def worker_env(database_url: str, kafka_bootstrap: str, topics: Topics) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "WORKER_METRICS_PORT": "0",
        "LOG_LEVEL": "DEBUG",
        **topics.env(),
    }


@pytest.fixture
def start_worker(
    tmp_path: Path, worker_env: dict[str, str], db: psycopg.Connection[Any]
) -> Iterator[StartWorker]:
    """Start `python -m consumer worker` processes on an empty database; all are killed at the end."""
    started: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        worker = WorkerProcess({**worker_env, **env}, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()
