"""consumer.heap: what the worker, the relay and the API do to the collector once started."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from consumer import heap


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_settle_freezes_what_is_loaded_and_makes_young_collections_rare() -> None:
    _, older, oldest = gc.get_threshold()
    gc.unfreeze()  # what earlier tests' apps froze would otherwise satisfy the count below
    heap.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (heap.YOUNG_COLLECTION_THRESHOLD, older, oldest)
