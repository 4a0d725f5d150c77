from __future__ import annotations

import pytest


@pytest.fixture
def partitions() -> int:
    """Four input partitions: several workers share them, and per-partition order is all Kafka keeps."""
    return 4
