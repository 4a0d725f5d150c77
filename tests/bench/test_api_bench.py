"""The API benchmark reports how the service batched the calls, from the service's own /metrics."""

from __future__ import annotations

import uuid

import httpx
import pytest

from bench.api_bench import BATCH_COUNTERS, batch_counters, report_batches
from tests.support.processes import ApiServer


def test_the_batch_counters_count_each_call_once(api: ApiServer, client: httpx.Client) -> None:
    before = batch_counters(api.url)
    for _ in range(3):
        email = f"batch-{uuid.uuid4().hex}@shop.example"
        assert client.post("/identify", json={"email": email}).is_success
    after = batch_counters(api.url)
    grown = {name: after[name] - before[name] for name in BATCH_COUNTERS}
    assert grown["identity_api_batch_size_sum"] == 3
    assert 1 <= grown["identity_api_batch_size_count"] <= 3


def test_a_level_s_batches_are_summed_up(capsys: pytest.CaptureFixture[str]) -> None:
    counted = dict(zip(BATCH_COUNTERS, [4, 10, 2, 0.003], strict=True))
    report_batches("service", 16, counted)
    assert capsys.readouterr().out == (
        "service  concurrency  16: 2.5 calls per batch, 50% of batches lingered, 1.50 ms on average\n"
    )
