"""The application's lifespan, in process."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from consumer.api.app import create_app
from consumer.config import Settings


def test_the_startup_heap_is_frozen_out_of_the_collector(database_url: str) -> None:
    """Full collections must not walk the framework's long-lived heap: those pauses set the API's p99."""
    gc.unfreeze()
    try:
        with TestClient(create_app(Settings(database_url=database_url))) as client:
            assert client.get("/healthz").status_code == 200
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
