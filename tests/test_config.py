"""consumer/config.py: defaults that depend on the machine, and the old name of a renamed setting."""

from __future__ import annotations

import pytest

from consumer.config import API_WORKERS_CAP, Settings, available_cpus


def test_api_workers_default_to_the_available_cores_capped() -> None:
    assert Settings().api_processes == min(available_cpus(), API_WORKERS_CAP)
    assert Settings(api_workers=3).api_processes == 3


def test_the_worker_connect_timeout_keeps_its_old_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_DB_CONNECT_TIMEOUT_S", "9")
    assert Settings().database_connect_timeout_s == 9


def test_metrics_bind_the_loopback_interface_by_default() -> None:
    settings = Settings()
    assert (settings.metrics_host, settings.api_host) == ("127.0.0.1", "127.0.0.1")
