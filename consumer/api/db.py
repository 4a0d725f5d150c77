"""The database as the API uses it: a sync psycopg pool, called from worker threads only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from psycopg import Connection
from psycopg_pool import ConnectionPool

from consumer.api import metrics

T = TypeVar("T")


class Database:
    """The sync psycopg pool, used only from worker threads, so the event loop never waits on PostgreSQL.

    The limiter has as many tokens as the pool has connections: a thread that starts always finds a
    connection, and requests beyond that queue cheaply on the event loop instead of in blocked threads.
    """

    def __init__(self, pool: ConnectionPool[Any], limiter: CapacityLimiter) -> None:
        self.pool = pool
        self.limiter = limiter

    async def run(self, work: Callable[[Connection[Any]], T], *, timeout: float | None = None) -> T:
        return await anyio.to_thread.run_sync(self._run, work, timeout, limiter=self.limiter)

    def _run(self, work: Callable[[Connection[Any]], T], timeout: float | None) -> T:
        try:
            with self.pool.connection(timeout) as conn:
                return work(conn)
        finally:
            metrics.record_pool(self.pool)
