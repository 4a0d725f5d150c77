"""The fixtures every test directory may use, registered once in tests/conftest.py (`pytest_plugins`).

A directory changes a default by overriding a fixture in its conftest.py (`partitions`, say), never
by importing fixtures from another test module.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from consumer.migrate import migrate
from tests.support import services
from tests.support.database import reset_database
from tests.support.kafka import OutputReader
from tests.support.processes import ApiServer, StartService, api_server
from tests.support.services import RestartablePostgres
from tests.support.stack import Stack
from tests.support.topics import Topics


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with services.postgres(tmp_path_factory.mktemp("postgres")) as url:
        migrate(url)
        yield url


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with services.kafka(tmp_path_factory.mktemp("kafka")) as servers:
        yield servers


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to an empty, migrated database."""
    with psycopg.connect(database_url) as conn:
        reset_database(conn)
        yield conn


@pytest.fixture
def own_postgres() -> Iterator[RestartablePostgres]:
    """A migrated PostgreSQL server of this test's own, which it may stop and start."""
    # Not under pytest's tmp_path: every pytest run chmods that tree to 0700, which would lock the
    # server's own user out of pg_ctl if another run starts meanwhile.
    with tempfile.TemporaryDirectory(prefix="own-postgres-") as workdir:
        os.chmod(workdir, 0o755)
        server = RestartablePostgres(Path(workdir) / "pgdata")
        try:
            migrate(server.url)
            yield server
        finally:
            server.handle.stop()


@pytest.fixture
def partitions() -> int:
    """Partitions of the test's input topic; override with `@pytest.mark.parametrize` or a fixture."""
    return 1


@pytest.fixture
def topics(kafka_bootstrap: str, partitions: int) -> Topics:
    return Topics.create(kafka_bootstrap, partitions)


@pytest.fixture
def stack_env() -> dict[str, str]:
    """Environment of every process of the test's stack; a directory may override it."""
    return {}


@pytest.fixture
def stack(
    database_url: str,
    kafka_bootstrap: str,
    topics: Topics,
    tmp_path: Path,
    db: psycopg.Connection[Any],
    stack_env: dict[str, str],
) -> Iterator[Stack]:
    """Worker and relay processes of this test on the emptied database; all are killed at the end."""
    running = Stack(database_url, kafka_bootstrap, topics, tmp_path, env=stack_env)
    yield running
    running.close()


@pytest.fixture
def worker_env(stack: Stack) -> dict[str, str]:
    return {**stack.base_env(), "LOG_LEVEL": "DEBUG"}


@pytest.fixture
def start_worker(stack: Stack, worker_env: dict[str, str]) -> StartService:
    """Start `python -m consumer worker` processes (debug logs) of this test's stack."""
    return lambda **env: stack.start("worker", **{**worker_env, **env})


@pytest.fixture
def start_relay(stack: Stack) -> StartService:
    """Start `python -m consumer relay` processes (debug logs) of this test's stack."""
    return lambda **env: stack.start("relay", **{"LOG_LEVEL": "DEBUG", **env})


@pytest.fixture
def reader(kafka_bootstrap: str, topics: Topics) -> Iterator[OutputReader]:
    output = OutputReader(kafka_bootstrap, topics.outputs)
    yield output
    output.close()


@pytest.fixture(scope="session")
def api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with api_server(database_url, tmp_path_factory.mktemp("api")) as server:
        yield server


@pytest.fixture
def client(api: ApiServer) -> Iterator[httpx.Client]:
    """An HTTP client of the session's API, sending its key (every scope)."""
    with httpx.Client(base_url=api.url, headers=api.headers, timeout=10) as http:
        yield http
