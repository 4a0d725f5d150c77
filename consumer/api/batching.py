"""Coalesce concurrent POST /identify calls into `reconcile_batch` transactions.

A transaction per call spends most of its time on round trips, the commit and handing work to a
thread; one transaction for the calls that arrived together costs a fraction of that per call (see
docs/api.md, "Concurrency and performance"). Batches form by themselves, without a timer: a few
drainers each take whatever is queued when they become free, so under light load a batch holds one
call and adds no latency, and under heavy load batches grow up to `api_batch_max_size`. The core gives
every call a result it could get alone, in queue order for calls that share an identifier.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial

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
    reconcile_batch,
)
from consumer.db import unavailable

log = structlog.get_logger(__name__)

_Call = tuple[Input, "asyncio.Future[Resolution]"]


class Reconciler:
    def __init__(self, database: Database, guard: Guardrails, *, max_batch: int, drainers: int) -> None:
        self._database = database
        self._guard = guard
        self._max_batch = max_batch
        self._drainers = drainers
        self._queue: asyncio.Queue[_Call] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._drain()) for _ in range(self._drainers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def reconcile(self, request: Input) -> Resolution:
        """Apply one call; raises like `consumer.core.reconcile`."""
        future: asyncio.Future[Resolution] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((request, future))
        return await future

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            metrics.BATCH_SIZE.observe(len(batch))
            await self._apply(batch)

    async def _apply(self, batch: list[_Call]) -> None:
        try:
            requests = [r for r, _ in batch]
            results = await self._database.run(partial(reconcile_batch, requests=requests, guard=self._guard))
        except Exception as exc:
            if len(batch) == 1 or unavailable(exc):
                # A lost connection or a busy pool would fail every call the same way.
                for _, future in batch:
                    _settle(future, exc)
                return
            # One call the database refuses must not fail the others: apply them one at a time.
            log.warning(
                "batch failed; applying its calls one by one", size=len(batch), error=type(exc).__name__
            )
            for call in batch:
                await self._apply([call])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, KeyConflict):
                _settle(future, IdempotencyKeyReused(result))
            elif isinstance(result, BlockedInput):
                _settle(future, IdentifiersBlocked(result))
            else:
                _settle(future, result)


def _settle(future: asyncio.Future[Resolution], outcome: Resolution | BaseException) -> None:
    if future.done():  # the client went away; its call was applied all the same
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
