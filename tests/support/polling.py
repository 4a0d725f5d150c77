"""Bounded waits: poll a condition instead of sleeping for a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    condition: Callable[..., object], timeout: float = 30.0, what: str = "condition", interval: float = 0.05
) -> float:
    """Poll `condition` until it holds; fail after `timeout` seconds. Returns how long it took (a
    figure to report, never to assert)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return round(time.monotonic() - start, 2)
