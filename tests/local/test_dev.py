"""`identity dev --demo`: the whole local stack comes up, tells the hillvalley story, and stops cleanly."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from consumer.clients import Scope, authenticate, revoke_client
from consumer.local.dev import KEY_FILE, local_api_key
from consumer.local.embedded import free_port


@pytest.mark.slow
def test_dev_stack_runs_the_demo_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DEV_DATA_DIR": str(tmp_path),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "API_PORT": str(free_port()),
        "WORKER_METRICS_PORT": str(free_port()),
        "RELAY_METRICS_PORT": str(free_port()),
    }
    env.pop("DATABASE_URL", None)
    dev = subprocess.Popen(
        [sys.executable, "-m", "consumer", "dev", "--demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert dev.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 180
    try:
        for line in dev.stdout:
            lines.append(line)
            if "POST /identify" in line and '"phoneNumber":717171' in line:
                lines.append(dev.stdout.readline())
                break
            assert time.monotonic() < deadline, "".join(lines)
        # The exports other commands need, printed and in DEV_DATA_DIR/env, reach this stack.
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in (tmp_path / "env").read_text().splitlines()
            if line.startswith("export ")
        )
        assert set(exports) == {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "IDENTITY_API_KEY"}
        assert all(f"export {name}=" in "".join(lines) for name in exports)
        check = subprocess.run(
            [sys.executable, "-m", "consumer", "check"],
            env={**os.environ, **{k: shlex.split(v)[0] for k, v in exports.items()}},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0, check
        assert "ok: every invariant holds" in check.stdout, check
        # Events still in the memory-only broker when Ctrl+C comes are processed before it stops.
        backlog = subprocess.run(
            [
                sys.executable,
                "-m",
                "producer_tools",
                "generate",
                "--events",
                "3000",
                "--seed",
                "9",
                "--no-wait",
            ],
            env={**env, "KAFKA_BOOTSTRAP_SERVERS": shlex.split(exports["KAFKA_BOOTSTRAP_SERVERS"])[0]},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert backlog.returncode == 0, backlog.stderr
        descendants = psutil.Process(dev.pid).children(recursive=True)
        assert {"worker", "relay", "api"} <= {
            p.cmdline()[-1] for p in descendants if "consumer" in p.cmdline()
        }
        dev.send_signal(signal.SIGINT)
        rest, _ = dev.communicate(timeout=60)
    finally:
        if dev.poll() is None:
            dev.kill()
    output = "".join(lines) + rest

    assert dev.returncode == 0, output
    # The bridging purchase merged Biff's customer into George's, and both storefront calls agree.
    assert '"outcome":"merged"' in output, output
    assert "identity.merged key=" in output, output
    assert '"emails":["lorraine@hillvalley.edu","mcfly@hillvalley.edu"],"phoneNumbers":["123456"]' in output
    assert (
        '"emails":["george@hillvalley.edu","biffsucks@hillvalley.edu"],"phoneNumbers":["919191","717171"]'
        in (output)
    )
    assert f"console     http://127.0.0.1:{env['API_PORT']}/console" in output
    assert "dev | stopping" in output
    assert "every event is processed and every output event published" in output, output
    assert "lost" not in output
    # The local client's key, kept for the next run, readable by this user only.
    assert shlex.split(exports["IDENTITY_API_KEY"])[0] == (tmp_path / KEY_FILE).read_text().strip()
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == (tmp_path / "env").stat().st_mode & 0o777 == 0o600
    assert not [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    # PostgreSQL keeps its data for the next run.
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()


def test_the_local_key_is_kept_while_valid_and_replaced_when_not(database_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / KEY_FILE
    first = local_api_key(database_url, key_file)
    assert local_api_key(database_url, key_file) == first

    key_file.unlink()
    second = local_api_key(database_url, key_file)
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert authenticate(conn, first) is None, "a lost key file rotates the key"
        client = authenticate(conn, second)
        assert client is not None
        assert client.scopes == frozenset(Scope)
        assert revoke_client(conn, client.name)
        third = local_api_key(database_url, key_file)
        assert third != second
        assert authenticate(conn, third) is not None
    assert key_file.read_text() == third + "\n"
