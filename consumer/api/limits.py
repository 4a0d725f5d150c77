"""Token buckets shared by every API process, kept in PostgreSQL (`take_tokens`, sql/005).

A process does not ask the database for each request: it leases a tenth of a second's worth of tokens
at a time (at least one, at most the burst) and spends them locally, so a hot client costs one round
trip per lease. Leased tokens have left the shared bucket, so all processes together never exceed the
rate; a process may hold at most one lease unspent. Once the bucket is empty, the process refuses
locally until the refill it computed, without asking again.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from psycopg import Connection

from consumer import queries
from consumer.api.db import Database

LEASE_S = 0.1
# Peer addresses are many; past this many buckets, those with nothing to remember are dropped.
MAX_BUCKETS = 10_000


@dataclass
class _Local:
    tokens: int = 0
    refused_until: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class RateLimiter:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._buckets: dict[str, _Local] = {}

    def refusing(self, bucket: str) -> float | None:
        """Seconds until `bucket` has a token again, if this process already knows it is empty."""
        local = self._buckets.get(bucket)
        wait = local.refused_until - time.monotonic() if local else 0.0
        return wait if wait > 0 else None

    async def take(self, bucket: str, rate: float, burst: int) -> float | None:
        """Take one token: None if granted, else the seconds to wait before one is available."""
        local = self._buckets.get(bucket) or self._add(bucket)
        if local.tokens > 0:
            local.tokens -= 1
            return None
        async with local.lock:  # one lease at a time; the others then spend what it brought
            if local.tokens == 0:
                if (wait := self.refusing(bucket)) is not None:
                    return wait
                want = max(1, min(burst, math.ceil(rate * LEASE_S)))
                granted, remaining = await self._database.run(
                    partial(_take_tokens, bucket=bucket, rate=rate, burst=burst, want=want)
                )
                if granted == 0:
                    wait = (1 - remaining) / rate
                    local.refused_until = time.monotonic() + wait
                    return wait
                local.tokens = granted
            local.tokens -= 1
            return None

    def _add(self, bucket: str) -> _Local:
        if len(self._buckets) >= MAX_BUCKETS:
            now = time.monotonic()
            self._buckets = {
                name: b
                for name, b in self._buckets.items()
                if b.tokens or b.refused_until > now or b.lock.locked()
            }
        local = self._buckets[bucket] = _Local()
        return local


def _take_tokens(
    conn: Connection[Any], *, bucket: str, rate: float, burst: int, want: int
) -> tuple[int, float]:
    row = conn.execute(queries.TAKE_TOKENS, [bucket, rate, burst, want]).fetchone()
    assert row is not None
    return int(row[0]), float(row[1])
