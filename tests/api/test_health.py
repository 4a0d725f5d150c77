"""/healthz says the process is alive; /readyz also needs the database and every migration."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from consumer.local.embedded import free_port
from consumer.migrate import available
from tests.support.keys import UNKNOWN_KEY
from tests.support.processes import api_server

UNMIGRATED_DB = "identity_api_unmigrated"


@pytest.fixture(scope="module")
def unmigrated_url(database_url: str) -> Iterator[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {UNMIGRATED_DB}")
        conn.execute(f"CREATE DATABASE {UNMIGRATED_DB}")
    yield make_conninfo(database_url, dbname=UNMIGRATED_DB)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {UNMIGRATED_DB} WITH (FORCE)")


def test_ready_when_the_database_is_migrated(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "reason": None, "pendingMigrations": []}


def test_not_ready_while_the_database_refuses_connections(tmp_path: Path) -> None:
    refusing = f"postgresql://postgres@127.0.0.1:{free_port()}/identity?connect_timeout=1"
    with api_server(refusing, tmp_path, key=UNKNOWN_KEY) as server:
        assert httpx.get(server.url + "/healthz").status_code == 200
        response = httpx.get(server.url + "/readyz", timeout=10)
        assert response.status_code == 503
        assert response.json()["reason"] == "database unreachable"

        # The key cannot be looked up: that is the database being unavailable too, not a bad key.
        identify = httpx.post(
            server.url + "/identify", json={"email": "doc@hillvalley.edu"}, headers=server.headers, timeout=20
        )
        assert identify.status_code == 503
        assert identify.json()["error"]["code"] == "database_unavailable"
        assert identify.headers["retry-after"]


def test_not_ready_while_migrations_are_pending(unmigrated_url: str, tmp_path: Path) -> None:
    with api_server(unmigrated_url, tmp_path, key=UNKNOWN_KEY) as server:
        response = httpx.get(server.url + "/readyz", timeout=10)
    assert response.status_code == 503
    body: dict[str, Any] = response.json()
    assert body["reason"] == "migrations pending"
    assert body["pendingMigrations"] == [m.version for m in available()]


def test_server_stops_cleanly_on_sigterm(tmp_path: Path, database_url: str) -> None:
    with api_server(database_url, tmp_path, env={"LOG_LEVEL": "INFO"}) as server:
        assert httpx.get(server.url + "/readyz").status_code == 200
        server.process.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells the cause.
        assert server.process.wait(15) == -signal.SIGTERM
        assert "Application shutdown complete" in server.log_path.read_text()
