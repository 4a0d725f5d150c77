"""Where the tests' PostgreSQL and Kafka come from: the environment, else Docker, else embedded."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

FAST_POSTGRES = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def docker_running() -> bool:
    """True only where a Docker engine answers; testcontainers needs one, this machine may have none."""
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def postgres(workdir: Path) -> Iterator[str]:
    if url := os.environ.get("DATABASE_URL"):
        yield url
    elif docker_running():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:17-alpine", driver=None) as container:
            yield container.get_connection_url()
    else:
        from consumer.local.embedded import start_postgres

        server = start_postgres(workdir / "pgdata", keep_data=False, settings=FAST_POSTGRES)
        try:
            yield server.url
        finally:
            server.stop()


@contextlib.contextmanager
def kafka(workdir: Path) -> Iterator[str]:
    if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield servers
    elif docker_running():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:3.9.1").with_kraft() as container:
            yield container.get_bootstrap_server()
    else:
        from consumer.local.embedded import start_broker

        broker = start_broker(log=workdir / "tansu.log")
        try:
            yield broker.bootstrap_servers
        finally:
            broker.stop()
