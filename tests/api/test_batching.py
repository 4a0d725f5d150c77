"""Concurrent POST /identify calls share transactions, yet one call the database refuses fails alone,
and one that waits for a customer another transaction holds holds up no other. Callers that take
turns are gathered into one batch (the linger), and a lone caller never waits."""

from __future__ import annotations

import asyncio
import random
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from anyio import CapacityLimiter
from prometheus_client import REGISTRY
from psycopg_pool import ConnectionPool

from consumer.api.batching import Reconciler
from consumer.api.db import Database
from consumer.core import Guardrails, Input
from consumer.core.blocklist import lock_key
from tests.core.helpers import request
from tests.support.metrics import samples, value
from tests.support.processes import ApiServer, api_server

CALLS = 24
CALLERS = 8
BLOCKER = "blocker@hillvalley.edu"
T = TypeVar("T")


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


class RecordingDatabase(Database):
    """The real database, noting each transaction's calls; `first_batch` runs as the first one starts."""

    def __init__(self, pool: ConnectionPool[Any], first_batch: Callable[[], Awaitable[None]]) -> None:
        super().__init__(pool, CapacityLimiter(4))
        self.sizes: list[int] = []
        self._first_batch = first_batch

    async def run(self, work: Callable[[psycopg.Connection[Any]], T], *, timeout: float | None = None) -> T:
        assert isinstance(work, partial)
        self.sizes.append(len(work.keywords["requests"]))
        if len(self.sizes) == 1:
            await self._first_batch()
        return await super().run(work, timeout=timeout)


def turns(database_url: str, linger_s: float) -> list[int]:
    """The batch sizes of eight callers that each make calls one after another, four of them joining
    while the first four's first batch is applied: the regime where batches take turns. The first four
    make one call more, so that all eight end together."""
    calls = (f"turn{i}@hillvalley.edu" for i in range(CALLERS * 6))

    async def caller(reconciler: Reconciler, rounds: int) -> None:
        for _ in range(rounds):
            await reconciler.reconcile(api_call(next(calls)))

    async def run(pool: ConnectionPool[Any]) -> list[int]:
        late: list[asyncio.Task[None]] = []

        async def second_half_arrives() -> None:
            late.extend(asyncio.create_task(caller(reconciler, 5)) for _ in range(CALLERS // 2))
            await asyncio.sleep(0)  # one turn of the loop: each new caller queues its first call

        database = RecordingDatabase(pool, second_half_arrives)
        async with running(database, linger_s) as reconciler:
            first = [asyncio.create_task(caller(reconciler, 6)) for _ in range(CALLERS // 2)]
            await asyncio.wait_for(asyncio.gather(*first), 60)
            await asyncio.wait_for(asyncio.gather(*late), 60)
        return database.sizes

    return in_pool(database_url, run)


@asynccontextmanager
async def running(database: Database, linger_s: float) -> AsyncIterator[Reconciler]:
    reconciler = Reconciler(
        database, Guardrails(), max_batch=32, drainers=1, max_waiting=2, linger_s=linger_s
    )
    reconciler.start()
    try:
        yield reconciler
    finally:
        await reconciler.stop()


def api_call(email: str) -> Input:
    """A call without an Idempotency-Key, as the route builds it."""
    return request(email, event=email, source="identity-api", idempotent=False)


def in_pool(database_url: str, work: Callable[[ConnectionPool[Any]], Coroutine[Any, Any, T]]) -> T:
    with ConnectionPool(database_url, min_size=1, max_size=4, kwargs={"autocommit": True}) as pool:
        return asyncio.run(work(pool))


def test_callers_that_take_turns_share_one_batch_once_the_process_saw_them_at_once(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # An hour's linger: were a batch to wait for calls that never come, the test would time out.
    lingered = lingers()
    sizes = turns(database_url, linger_s=3600)
    # The first four alone; the other four queued while it was applied, and from then on all eight.
    # Only the second batch waited (for the first four's next calls): once in step, the eight answered
    # together come back together.
    assert sizes == [4, 8, 8, 8, 8, 8]
    assert lingers() - lingered == 1
    assert db.execute("SELECT count(*) FROM contact").fetchone() == (44,)


def test_without_a_linger_the_same_callers_take_turns(db: psycopg.Connection[Any], database_url: str) -> None:
    # What the linger is for: two half batches taking turns, a transaction each.
    assert turns(database_url, linger_s=0) == [4] * 11


def test_a_lone_caller_never_waits(db: psycopg.Connection[Any], database_url: str) -> None:
    async def run(pool: ConnectionPool[Any]) -> list[int]:
        database = RecordingDatabase(pool, lambda: asyncio.sleep(0))  # nothing else arrives
        async with running(database, linger_s=3600) as reconciler:
            for i in range(5):  # each would wait out the hour if a lone call lingered
                await asyncio.wait_for(reconciler.reconcile(api_call(f"lone{i}@hillvalley.edu")), 60)
        return database.sizes

    lingered = lingers()
    assert in_pool(database_url, run) == [1] * 5
    assert lingers() == lingered


def lingers() -> float:
    """Batches that waited for calls, so far, in this process."""
    return REGISTRY.get_sample_value("identity_api_batch_linger_seconds_count") or 0.0
