"""Concurrent POST /identify calls share transactions, yet one call the database refuses fails alone,
and one that waits for a customer another transaction holds holds up no other."""

from __future__ import annotations

import asyncio
import random
import string
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from consumer.core.blocklist import lock_key
from tests.support.metrics import samples, value
from tests.support.processes import ApiServer, api_server

CALLS = 24
BLOCKER = "blocker@hillvalley.edu"


@pytest.fixture(scope="module")
def one_drainer(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    # One drainer (the default), so calls queue behind a busy transaction; the raised limits let an
    # email through that is too long for PostgreSQL's btree index: a call the database itself refuses.
    env = {"API_BATCH_DRAINERS": "1", "EMAIL_MAX_LENGTH": "20000", "API_MAX_BODY_BYTES": "100000"}
    with api_server(database_url, tmp_path_factory.mktemp("api-batch"), env=env) as server:
        yield server


async def wait_for_in_progress(url: str, count: int) -> None:
    """Until `count` requests are being handled (the scrape itself counts as one)."""
    deadline = time.monotonic() + 20
    while value(samples(url), "identity_api_requests_in_progress") < count + 1:
        assert time.monotonic() < deadline, f"fewer than {count} requests arrived"
        await asyncio.sleep(0.02)


async def scenario(api: ApiServer, bodies: list[dict[str, str]], lock: psycopg.Connection[Any]) -> list[int]:
    """Stall the only drainer's transaction on the outbox `lock` holds, queue every call behind it,
    then let go."""
    url = api.url
    async with httpx.AsyncClient(base_url=url, headers=api.headers, timeout=30) as http:
        blocker = asyncio.create_task(http.post("/identify", json={"email": BLOCKER}))
        await wait_for_in_progress(url, 1)
        calls = [asyncio.create_task(http.post("/identify", json=body)) for body in bodies]
        await wait_for_in_progress(url, 1 + len(bodies))
        lock.rollback()
        assert (await blocker).status_code == 200
        return [(await call).status_code for call in calls]


def test_a_refused_call_fails_alone(
    one_drainer: ApiServer, db: psycopg.Connection[Any], database_url: str
) -> None:
    unindexable = "".join(random.Random(7).choices(string.ascii_letters, k=9000)) + "@hillvalley.edu"
    bodies = [{"email": f"guest{i}@hillvalley.edu", "phoneNumber": str(1000 + i)} for i in range(CALLS)]
    bodies.insert(CALLS // 2, {"email": unindexable})
    before = samples(one_drainer.url)

    with psycopg.connect(database_url) as lock:
        lock.execute("LOCK TABLE outbox IN SHARE MODE")  # a new customer's transaction writes there
        statuses = asyncio.run(scenario(one_drainer, bodies, lock))

    assert statuses.pop(CALLS // 2) == 500
    assert statuses == [200] * CALLS
    assert db.execute("SELECT count(*) FROM contact").fetchone() == (CALLS + 1,)
    after = samples(one_drainer.url)
    batches = value(after, "identity_api_batch_size_count") - value(before, "identity_api_batch_size_count")
    bucket = "identity_api_batch_size_bucket"
    # The blocker alone, then every queued call in one batch (over 16), split when it failed.
    assert batches == 2
    assert value(after, bucket, le="16.0") - value(before, bucket, le="16.0") == 1
    assert "batch failed" in one_drainer.log_path.read_text()


def test_a_call_waiting_for_a_customer_held_elsewhere_holds_up_no_other(
    one_drainer: ApiServer, database_url: str
) -> None:
    held = "held@hillvalley.edu"

    async def calls(lock: psycopg.Connection[Any]) -> None:
        async with httpx.AsyncClient(
            base_url=one_drainer.url, headers=one_drainer.headers, timeout=30
        ) as http:
            waiting = asyncio.create_task(http.post("/identify", json={"email": held}))
            await wait_for_in_progress(one_drainer.url, 1)
            other = await asyncio.wait_for(http.post("/identify", json={"email": "free@hillvalley.edu"}), 10)
            assert other.status_code == 200
            assert not waiting.done()  # still waiting for the customer's lock
            lock.execute("SELECT pg_advisory_unlock(%s)", [lock_key("email", held)])
            assert (await waiting).json()["contact"]["emails"] == [held]

    with psycopg.connect(database_url, autocommit=True) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", [lock_key("email", held)])
        asyncio.run(calls(lock))
