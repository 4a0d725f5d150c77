"""`identity health worker|relay` reports whether the process's loop is going round (its heartbeat)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from consumer.local.embedded import free_port
from tests.support.polling import wait_until
from tests.support.processes import StartService


def health(component: str, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    variable = f"{component.upper()}_METRICS_PORT"
    return subprocess.run(
        [sys.executable, "-m", "consumer", "health", component, *args],
        env={variable: str(port), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("component", ["worker", "relay"])
def test_healthy_while_the_loop_goes_round_and_not_once_it_stopped(
    component: str, start_worker: StartService, start_relay: StartService
) -> None:
    port = free_port()
    start = start_worker if component == "worker" else start_relay
    process = start(**{f"{component.upper()}_METRICS_PORT": str(port)})

    wait_until(lambda: health(component, port).returncode == 0, 60, f"the {component} to be healthy")
    assert "healthy: the" in health(component, port).stdout
    # The heartbeat's age is what is judged, not merely that the port answers.
    stale = health(component, port, "--max-age", "0")
    assert stale.returncode == 1
    assert "loop last went round" in stale.stderr

    assert process.stop() == 0
    gone = health(component, port)
    assert gone.returncode == 1
    assert "does not answer" in gone.stderr
