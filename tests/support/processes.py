"""The service's processes as the tests run them: `python -m consumer COMMAND`, logs in a file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson

from consumer.local.embedded import free_port
from tests.support import ROOT
from tests.support.keys import UNLIMITED, bearer, new_key
from tests.support.polling import wait_until

STARTUP_TIMEOUT_S = 30.0


class Service:
    """`python -m consumer COMMAND [ARGS]` as a real process, its (JSON) logs in a file."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path, args: Sequence[str] = ()) -> None:
        self.command = command
        self.log_path = log_path
        environment = {**os.environ, **env}
        # prometheus-client of a multi-worker API picks its storage from this; never inherit the caller's.
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "consumer", command, *args],
                env=environment,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def logs(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_bytes().splitlines()
        return [orjson.loads(line) for line in lines if line.startswith(b"{")]

    def logged(self, event: str) -> bool:
        return any(entry.get("event") == event for entry in self.logs())

    def owned(self) -> set[str]:
        """The partitions a worker owns now, from its log."""
        partitions: set[str] = set()
        for entry in self.logs():
            if entry.get("event") == "partitions assigned":
                partitions |= set(entry["partitions"])
            elif entry.get("event") in ("partitions revoked", "partitions lost"):
                partitions -= set(entry["partitions"])
        return partitions

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit status (SIGKILL if it does not exit in time)."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def close(self) -> None:
        """Kill it if it still runs (the end of a test)."""
        if self.running():
            self.process.kill()
            self.process.wait()


StartService = Callable[..., Service]
"""A fixture's way to start a process of the test's stack, with extra environment variables."""


class ApiServer(Service):
    """The API on a free port of 127.0.0.1, with the key of a client of its own."""

    def __init__(self, env: dict[str, str], log_dir: Path, key: str, *, workers: int = 1) -> None:
        port = free_port()
        super().__init__(
            "api", env, log_dir / f"api-{port}.log", ["--port", str(port), "--workers", str(workers)]
        )
        self.url = f"http://127.0.0.1:{port}"
        self.key = key

    @property
    def headers(self) -> dict[str, str]:
        """Authorization with the server's own key."""
        return bearer(self.key)

    def answers(self, path: str = "/healthz") -> bool:
        return answers(self.url + path)


def answers(url: str) -> bool:
    """True when a GET of `url` answers 200 within 2 s."""
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2).status_code == 200
    return False


@contextlib.contextmanager
def api_server(
    database_url: str,
    log_dir: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    ready: str = "/healthz",
    key: str | None = None,
) -> Iterator[ApiServer]:
    """Start the API and wait until `ready` answers 200; stop it cleanly afterwards.

    Without `key`, a client with every scope is created in the database for the server's callers."""
    env = {
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "API_POOL_MAX_SIZE": "8",
        # The failed-authentication bucket of 127.0.0.1 is shared by every server on the test database:
        # tests that fail on purpose must not lock the others out. Tests of that limit set their own.
        "API_AUTH_FAILURES_PER_S": str(UNLIMITED),
        "API_AUTH_FAILURE_BURST": str(UNLIMITED),
        **(env or {}),
    }
    server = ApiServer(env, log_dir, key or new_key(database_url), workers=workers)
    try:
        wait_until(lambda: not server.running() or server.answers(ready), STARTUP_TIMEOUT_S, "the API")
        if not server.running():
            output = server.log_path.read_text(errors="replace")
            raise RuntimeError(f"the API did not start; its output:\n{output}")
        yield server
    finally:
        server.stop(15)


def identity(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m consumer ARGS` against the database at `url`, to completion, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        env={**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
