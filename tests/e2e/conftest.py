from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.reliability.support import Stack, StackTopics


@pytest.fixture
def pipeline(
    database_url: str, kafka_bootstrap: str, tmp_path: Path, db: psycopg.Connection[Any]
) -> Iterator[Stack]:
    """Worker and relay processes on the emptied database; one input partition, so events are applied in
    the order they are produced and the contact ids they create follow that order."""
    stack = Stack(database_url, kafka_bootstrap, StackTopics.create(kafka_bootstrap, 1), tmp_path)
    yield stack
    stack.close()
