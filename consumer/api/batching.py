"""Coalesce concurrent POST /identify calls into transactions.

A transaction per call spends most of its time on round trips, the commit and handing work to a
thread; one transaction for the calls that arrived together costs a fraction of that per call (see
docs/api.md, "Concurrency and performance"). A drainer takes whatever is queued when it becomes free,
so under load the calls that arrive during one commit share the next (up to `api_batch_max_size`).
One drainer (`api_batch_drainers`) makes the largest batches, and so the least CPU per call: on 2
cores it beat four drainers in throughput and p99 alike (docs/benchmarks.md).

Left to that alone, a few clients that each wait for their answer split into two batches that take
turns: one is applied while the other's calls arrive. So a batch waits, at most `api_batch_linger_ms`,
until it holds as many calls as the process last had at once (queued and being applied): the calls
just answered come back within a round trip, and one transaction for all of them costs far less than
two. A lone call never waits: the process had one call at once.

A drainer's transaction never waits for a lock (`reconcile_ready`): calls touching a customer another
transaction holds are applied by a transaction of their own that waits (`reconcile_batch`), off the
line, so the calls behind them are not held up. Calls that share an identifier are applied in queue
order; concurrent calls are, as any concurrent calls, in no promised order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import structlog

from consumer.api import metrics
from consumer.api.db import Database
from consumer.core import (
    BlockedInput,
    Guardrails,
    IdempotencyKeyReused,
    IdentifiersBlocked,
    Input,
    KeyConflict,
    Resolution,
    Result,
    reconcile_batch,
    reconcile_ready,
)
from consumer.db import unavailable

log = structlog.get_logger(__name__)

_Call = tuple[Input, "asyncio.Future[Resolution]"]
_Apply = Callable[..., Sequence[Result | None]]


class Reconciler:
    def __init__(
        self,
        database: Database,
        guard: Guardrails,
        *,
        max_batch: int,
        drainers: int,
        max_waiting: int,
        linger_s: float,
    ) -> None:
        """`max_waiting` bounds the transactions waiting for locks: with the drainers, at most the pool's
        size, so a drainer always finds a connection."""
        self._database = database
        self._guard = guard
        self._max_batch = max_batch
        self._drainers = drainers
        self._linger_s = linger_s
        self._queue: asyncio.Queue[_Call] = asyncio.Queue()
        self._arrived = asyncio.Event()
        self._applying = 0
        """Calls in the drainers' transactions now."""
        self._at_once = 0
        """The most calls queued and being applied at once since the last batch formed."""
        self._tasks: list[asyncio.Task[None]] = []
        self._waiting: set[asyncio.Task[None]] = set()
        self._waiting_slots = asyncio.Semaphore(max_waiting)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._drain()) for _ in range(self._drainers)]

    async def stop(self) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._tasks, *self._waiting]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def reconcile(self, request: Input) -> Resolution:
        """Apply one call; raises like `consumer.core.reconcile`."""
        future: asyncio.Future[Resolution] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((request, future))
        self._at_once = max(self._at_once, self._queue.qsize() + self._applying)
        self._arrived.set()
        return await future

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            await self._gather(min(self._at_once, self._max_batch) - 1)
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            metrics.BATCH_SIZE.observe(len(batch))
            self._applying += len(batch)
            self._at_once = self._queue.qsize() + self._applying
            try:
                left = await self._apply(batch, reconcile_ready)
            finally:
                self._applying -= len(batch)
            if left:
                task = asyncio.create_task(self._wait_and_apply(left))
                self._waiting.add(task)
                task.add_done_callback(self._waiting.discard)

    async def _gather(self, queued: int) -> None:
        """Wait until `queued` calls are queued, or the linger is over."""
        if self._linger_s <= 0 or self._queue.qsize() >= queued:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._linger_s):
                while self._queue.qsize() < queued:
                    self._arrived.clear()
                    await self._arrived.wait()
        metrics.BATCH_LINGER.observe(loop.time() - started)

    async def _wait_and_apply(self, calls: list[_Call]) -> None:
        async with self._waiting_slots:
            await self._apply(calls, reconcile_batch)

    async def _apply(self, batch: list[_Call], apply: _Apply) -> list[_Call]:
        """Apply `batch` with `apply` and settle its calls; returns those `apply` left (None)."""
        try:
            requests = [r for r, _ in batch]
            results = await self._database.run(partial(apply, requests=requests, guard=self._guard))
        except Exception as exc:
            if len(batch) == 1 or unavailable(exc):
                # A lost connection or a busy pool would fail every call the same way.
                for _, future in batch:
                    _settle(future, exc)
                return []
            # One call the database refuses must not fail the others: apply them one at a time.
            log.warning(
                "batch failed; applying its calls one by one", size=len(batch), error=type(exc).__name__
            )
            for call in batch:
                await self._apply([call], reconcile_batch)
            return []
        left = []
        for call, result in zip(batch, results, strict=True):
            future = call[1]
            if result is None:
                left.append(call)
            elif isinstance(result, KeyConflict):
                _settle(future, IdempotencyKeyReused(result))
            elif isinstance(result, BlockedInput):
                _settle(future, IdentifiersBlocked(result))
            else:
                _settle(future, result)
        return left


def _settle(future: asyncio.Future[Resolution], outcome: Resolution | BaseException) -> None:
    if future.done():  # the client went away; its call was applied all the same
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
