"""The API under test is the real server process (`python -m consumer api`), called over HTTP.

Each server comes with a key of its own client, holding every scope and a rate limit no test reaches;
`client` is an httpx client that sends it. Tests of access control make keys of their own.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from consumer.clients import KEY_PATTERN, Scope, create_client
from consumer.embedded import free_port

STARTUP_TIMEOUT_S = 30.0
# Well-formed, but no database holds it: for servers whose database cannot create a client.
UNKNOWN_KEY = "idk_000000000000_" + "A" * 43
UNLIMITED = 1_000_000


def new_key(
    database_url: str,
    scopes: Iterable[Scope] = Scope,
    *,
    rate_per_s: float = UNLIMITED,
    burst: int = UNLIMITED,
) -> str:
    """The key of a new client with a unique name."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return create_client(
            conn, f"test-{uuid.uuid4().hex[:12]}", scopes, rate_per_s=rate_per_s, burst=burst
        )


def secret_of(key: str) -> str:
    """The secret part of a key (after `idk_<key id>_`); it may itself hold '_'."""
    match = KEY_PATTERN.fullmatch(key)
    assert match is not None
    return match[2]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class ApiServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    key: str

    @property
    def headers(self) -> dict[str, str]:
        """Authorization with the server's own key, which holds every scope."""
        return bearer(self.key)


@contextlib.contextmanager
def api_server(
    database_url: str,
    log_dir: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    key: str | None = None,
) -> Iterator[ApiServer]:
    """Start the API on a free port and wait until /healthz answers; stop it cleanly afterwards.

    Without `key`, a new client with every scope is created in the database for it."""
    key = key or new_key(database_url)
    port = free_port()
    log = log_dir / f"api-{port}.log"
    process_env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "API_POOL_MAX_SIZE": "8",
        # The failed-authentication bucket of 127.0.0.1 is shared by every server on the test database:
        # tests that fail on purpose must not lock the others out. Tests of that limit set their own.
        "API_AUTH_FAILURES_PER_S": str(UNLIMITED),
        "API_AUTH_FAILURE_BURST": str(UNLIMITED),
        **(env or {}),
    }
    process_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "api", "--port", str(port), "--workers", str(workers)],
            env=process_env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = ApiServer(f"http://127.0.0.1:{port}", process, log, key)
    try:
        _wait_until_alive(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_alive(server: ApiServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the API did not start; its output:\n{server.log.read_text(errors='replace')}")


@pytest.fixture(scope="session")
def api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with api_server(database_url, tmp_path_factory.mktemp("api")) as server:
        yield server


@pytest.fixture
def client(api: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, headers=api.headers, timeout=10) as http:
        yield http
