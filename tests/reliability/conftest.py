from __future__ import annotations

import pytest

from tests.support.graph import UNGUARDED_ENV


@pytest.fixture
def partitions() -> int:
    """Four input partitions: several workers share them, and per-partition order is all Kafka keeps."""
    return 4


@pytest.fixture
def stack_env() -> dict[str, str]:
    """Unguarded: these tests check every identity against plain connected components of random
    pairs (`verify_database`), which hubs among them would break."""
    return UNGUARDED_ENV
