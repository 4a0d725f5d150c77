"""The shared token buckets in-process, against the real database: leases, refusals, pruning."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from anyio import CapacityLimiter
from psycopg_pool import ConnectionPool

from consumer.api import limits
from consumer.api.db import Database
from consumer.api.limits import RateLimiter


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    with ConnectionPool(database_url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        yield Database(pool, CapacityLimiter(2))


def tokens_left(database_url: str, bucket: str) -> float:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT tokens FROM rate_bucket WHERE bucket = %s", [bucket]).fetchone()
    assert row is not None
    return float(row[0])


def takes(limiter: RateLimiter, bucket: str, n: int, rate: float, burst: int) -> list[float | None]:
    async def run() -> list[float | None]:
        return [await limiter.take(bucket, rate, burst) for _ in range(n)]

    return asyncio.run(run())


def test_a_lease_serves_a_tenth_of_a_second_without_asking_again(
    database: Database, database_url: str
) -> None:
    limiter, bucket = RateLimiter(database), f"client:{uuid.uuid4().hex}"
    assert takes(limiter, bucket, 1, 100, 50) == [None]
    leased = tokens_left(database_url, bucket)
    assert 40 <= leased < 41, "the first call leased 10 tokens of the 50"

    assert takes(limiter, bucket, 9, 100, 50) == [None] * 9
    assert tokens_left(database_url, bucket) == leased, "spent locally: no round trip"


def test_an_empty_bucket_is_refused_locally_until_it_refills(database: Database, database_url: str) -> None:
    limiter, bucket = RateLimiter(database), f"peer:{uuid.uuid4().hex}"
    first, second, third = takes(limiter, bucket, 3, 0.01, 2)
    assert (first, second) == (None, None)
    assert third is not None
    assert 99 < third <= 100, "one token at 0.01/s: up to 100 s"
    before = tokens_left(database_url, bucket)
    (again,) = takes(limiter, bucket, 1, 0.01, 2)
    assert again is not None
    assert again <= third
    assert tokens_left(database_url, bucket) == before, "refused without asking the database"
    assert RateLimiter(database).refusing(bucket) is None, "another process learns it from the database"


def test_past_the_limit_buckets_with_nothing_to_remember_are_dropped(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_BUCKETS", 3)
    limiter, tag = RateLimiter(database), uuid.uuid4().hex
    takes(limiter, f"peer:{tag}-spent", 1, 1, 5)  # leased 1, spent it
    takes(limiter, f"peer:{tag}-refused", 2, 0.001, 1)  # refused for a while
    takes(limiter, f"client:{tag}-holding", 1, 100, 50)  # holds 9 leased tokens
    takes(limiter, f"peer:{tag}-new", 1, 1, 5)
    assert limiter.refusing(f"peer:{tag}-refused") is not None
    assert set(limiter._buckets) == {f"peer:{tag}-refused", f"client:{tag}-holding", f"peer:{tag}-new"}
