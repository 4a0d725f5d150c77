from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.reliability.support import Stack, StackTopics
from tests.worker.test_outage import own_postgres  # noqa: F401  (a PostgreSQL this test may restart)


@pytest.fixture
def stack(
    database_url: str, kafka_bootstrap: str, tmp_path: Path, db: psycopg.Connection[Any]
) -> Iterator[Stack]:
    """Worker and relay processes on the session's (emptied) database and broker, 4 input partitions."""
    running = Stack(database_url, kafka_bootstrap, StackTopics.create(kafka_bootstrap, 4), tmp_path)
    yield running
    running.close()
