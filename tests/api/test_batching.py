"""Concurrent POST /identify calls share transactions, yet one call the database refuses fails alone."""

from __future__ import annotations

import asyncio
import random
import string
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.conftest import ApiServer, api_server
from tests.api.test_metrics import samples, value

CALLS = 24


@pytest.fixture(scope="module")
def one_drainer(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    # One drainer makes concurrent calls queue up and batch; the raised limits let an email through
    # that is too long for PostgreSQL's btree index, a call the database itself refuses.
    env = {"API_BATCH_DRAINERS": "1", "EMAIL_MAX_LENGTH": "20000", "API_MAX_BODY_BYTES": "100000"}
    with api_server(database_url, tmp_path_factory.mktemp("api-batch"), env=env) as server:
        yield server


async def call_concurrently(url: str, bodies: list[dict[str, str]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        return list(await asyncio.gather(*(http.post("/identify", json=body) for body in bodies)))


def test_a_refused_call_fails_alone(one_drainer: ApiServer, db: psycopg.Connection[Any]) -> None:
    unindexable = "".join(random.Random(7).choices(string.ascii_letters, k=9000)) + "@hillvalley.edu"
    bodies = [{"email": f"guest{i}@hillvalley.edu", "phoneNumber": str(1000 + i)} for i in range(CALLS)]
    bodies.insert(CALLS // 2, {"email": unindexable})
    before = samples(one_drainer.url)

    responses = asyncio.run(call_concurrently(one_drainer.url, bodies))

    statuses = [r.status_code for r in responses]
    assert statuses.pop(CALLS // 2) == 500
    assert statuses == [200] * CALLS
    assert db.execute("SELECT count(*) FROM contact").fetchone() == (CALLS,)
    after = samples(one_drainer.url)
    batches = value(after, "identity_api_batch_size_count") - value(before, "identity_api_batch_size_count")
    assert batches < CALLS + 1, "the calls were applied in shared transactions"
    assert "batch failed" in one_drainer.log.read_text()
