from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.relay.support import OutputReader, Service, Topics

StartRelay = Callable[..., Service]


@pytest.fixture
def topics(kafka_bootstrap: str) -> Topics:
    return Topics.create(kafka_bootstrap)


@pytest.fixture
def relay_env(database_url: str, kafka_bootstrap: str, topics: Topics) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "RELAY_METRICS_PORT": "0",
        "RELAY_POLL_INTERVAL_S": "0.2",
        "LOG_LEVEL": "DEBUG",
        **topics.env(),
    }


@pytest.fixture
def start_relay(tmp_path: Path, relay_env: dict[str, str]) -> Iterator[StartRelay]:
    """Start `python -m consumer relay` processes; every one still running is stopped at the end."""
    started: list[Service] = []

    def start(**env: str) -> Service:
        service = Service("relay", {**relay_env, **env}, tmp_path / f"relay-{len(started)}.log")
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def reader(kafka_bootstrap: str, topics: Topics) -> Iterator[OutputReader]:
    output = OutputReader(kafka_bootstrap, [topics.resolved, topics.merged])
    yield output
    output.close()
