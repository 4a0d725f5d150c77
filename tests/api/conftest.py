"""The API under test is the real server process (`python -m consumer api`), called over HTTP."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from consumer.local.embedded import free_port

STARTUP_TIMEOUT_S = 30.0


@dataclass
class ApiServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextlib.contextmanager
def api_server(
    database_url: str, log_dir: Path, *, workers: int = 1, env: dict[str, str] | None = None
) -> Iterator[ApiServer]:
    """Start the API on a free port and wait until /healthz answers; stop it cleanly afterwards."""
    port = free_port()
    log = log_dir / f"api-{port}.log"
    process_env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "API_POOL_MAX_SIZE": "8",
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
    server = ApiServer(f"http://127.0.0.1:{port}", process, log)
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
    with httpx.Client(base_url=api.url, timeout=10) as http:
        yield http
