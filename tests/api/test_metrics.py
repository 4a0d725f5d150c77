"""/metrics exposes request counts and latencies by route and status, outcomes, and pool usage."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.metrics import samples, value
from tests.support.processes import ApiServer, api_server


def test_metrics_count_requests_outcomes_and_pool(api: ApiServer, client: httpx.Client) -> None:
    before = samples(api.url)
    client.post("/identify", json={"email": "strickland@hillvalley.edu"})
    client.post("/identify", json={"email": "strickland@hillvalley.edu"})
    client.post("/identify", json={})
    after = samples(api.url)

    ok = {"method": "POST", "route": "/identify", "status": "200"}
    bad = {"method": "POST", "route": "/identify", "status": "400"}
    for name, labels, increase in [
        ("identity_api_requests_total", ok, 2),
        ("identity_api_requests_total", bad, 1),
        ("identity_api_request_duration_seconds_count", ok, 2),
        ("identity_api_reconciliations_total", {"outcome": "created_primary"}, 1),
        ("identity_api_reconciliations_total", {"outcome": "matched"}, 1),
    ]:
        assert value(after, name, **labels) - value(before, name, **labels) == increase, (name, labels)
    assert value(after, "identity_api_db_pool_connections", state="max") == 8
    assert value(after, "identity_api_db_pool_connections", state="open") >= 1


@pytest.fixture(scope="module")
def two_workers(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with api_server(database_url, tmp_path_factory.mktemp("api2"), workers=2) as server:
        yield server


def test_metrics_add_up_across_uvicorn_workers(two_workers: ApiServer) -> None:
    # A new connection per request lets the kernel spread them over both workers' shared socket.
    for _ in range(20):
        assert (
            httpx.post(two_workers.url + "/identify", json={}, headers=two_workers.headers).status_code == 400
        )
    metrics = samples(two_workers.url)
    assert value(metrics, "identity_api_requests_total", method="POST", route="/identify", status="400") == 20
