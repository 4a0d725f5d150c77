"""Guardrails under a hub value: `python -m bench.guard_bench [--checkouts 20000]`.

A shop's till phone is typed for every walk-in buyer: CHECKOUTS checkouts share one phone, each with a
new email. Over HTTP (POST /identify) and through the worker, in the same run, beside the same number
of checkouts of unrelated customers (no hub). Prints, over HTTP, the cost of the next hub call once
10, 1,000 and CHECKOUTS such checkouts are in, against a fresh customer's call at the same moment
(medians of PROBES sequential calls each); the largest response; and the throughput of both whole runs.
Through the worker: events/s of both runs and the largest stored idempotency record.

Targets (issue: guardrails): the last hub call costs at most 1.5x the 10th; no response over 8 KB;
hub throughput within 20% of the run without a hub.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import psycopg

from consumer.core import check_invariants
from consumer.local.embedded import create_topics, start_broker, start_postgres
from consumer.migrate import migrate
from producer_tools import CheckoutProducer
from tests.support import FAST_POSTGRES
from tests.support.polling import wait_until
from tests.support.processes import Service, api_server

HUB = "+1 555 0100"
CONCURRENCY = 16
PROBES = 50


class HttpRun:
    """One database, one API process, one kind of traffic: `hub` checkouts or unrelated customers."""

    def __init__(self, url: str, hub: bool) -> None:
        self.url = url
        self.hub = hub
        self.sent = 0
        self.largest = 0
        self.loaded = 0
        self.busy_s = 0.0

    def body(self, tag: str) -> dict[str, str]:
        self.sent += 1
        email = f"buyer-{tag}-{self.sent}@shop.example"
        return {"email": email, "phoneNumber": HUB if self.hub else f"+1 444 {self.sent:07d}"}

    def fresh(self) -> dict[str, str]:
        """A new customer unrelated to any other."""
        self.sent += 1
        return {"email": f"fresh-{self.sent}@shop.example", "phoneNumber": f"+1 333 {self.sent:07d}"}

    async def drive(self, http: aiohttp.ClientSession, count: int) -> None:
        """`count` calls, CONCURRENCY at a time; the time counts toward throughput."""
        start = time.perf_counter()
        queue = iter(range(count))

        async def loop() -> None:
            for _ in queue:
                await self.call(http, self.body("load"))

        await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))
        self.busy_s += time.perf_counter() - start
        self.loaded += count

    async def call(self, http: aiohttp.ClientSession, body: dict[str, str]) -> float:
        start = time.perf_counter()
        async with http.post("/identify", json=body) as response:
            payload = await response.read()
        elapsed = time.perf_counter() - start
        assert response.status == 200, payload
        self.largest = max(self.largest, len(payload))
        return elapsed

    async def probe(self, http: aiohttp.ClientSession) -> tuple[float, float]:
        """Median ms of the next PROBES calls of this run's kind, and of as many fresh customers'."""
        own = [await self.call(http, self.body("probe")) for _ in range(PROBES)]
        fresh = [await self.call(http, self.fresh()) for _ in range(PROBES)]
        return statistics.median(own) * 1000, statistics.median(fresh) * 1000


async def http_run(url: str, hub: bool, checkouts: int) -> tuple[HttpRun, dict[int, tuple[float, float]]]:
    run = HttpRun(url, hub)
    probes: dict[int, tuple[float, float]] = {}
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(60)) as http:
        done = 0
        for mark in (10, 1_000, checkouts):
            await run.drive(http, mark - done)
            done = mark
            probes[mark] = await run.probe(http)
    return run, probes


def worker_run(pg_url: str, bootstrap: str, hub: bool, checkouts: int, workdir: Path) -> float:
    """Events/s of one worker applying `checkouts` events produced beforehand."""
    tag = "hub" if hub else "plain"
    topic, dlq = f"bench-{tag}.checkout", f"bench-{tag}.dlq"
    create_topics(bootstrap, {topic: 1, dlq: 1})
    with CheckoutProducer(bootstrap, topic, source=f"urn:bench:{tag}") as producer:
        for n in range(checkouts):
            producer.send(f"w-{tag}-{n}@shop.example", HUB if hub else f"+1 222 {n:07d}")
    env = {
        "DATABASE_URL": pg_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CHECKOUT_TOPIC": topic,
        "DLQ_TOPIC": dlq,
        "KAFKA_GROUP_ID": f"bench-{tag}",
        "WORKER_METRICS_PORT": "0",
        "LOG_LEVEL": "WARNING",
    }
    source = f"urn:bench:{tag}"
    start = time.perf_counter()
    worker = Service("worker", env, workdir / f"worker-{tag}.log")
    try:
        wait_until(lambda: _processed(pg_url, source) >= checkouts, 600, f"the {tag} events", interval=0.2)
        return checkouts / (time.perf_counter() - start)
    finally:
        worker.stop()


def _processed(url: str, source: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM processed_event WHERE source = %s", [source]).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def database(workdir: Path, name: str) -> Iterator[str]:
    pg = start_postgres(workdir / name, keep_data=False, settings=FAST_POSTGRES)
    try:
        migrate(pg.url)
        yield pg.url
    finally:
        pg.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.guard_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--checkouts", type=int, default=20_000, help="hub checkouts per run (20,000)")
    args = parser.parse_args(argv)
    n = args.checkouts
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as tmp:
        workdir = Path(tmp)
        print(f"{n} checkouts sharing one phone vs {n} unrelated customers; {CONCURRENCY} concurrent calls")
        results = {}
        for hub in (True, False):
            api_env = {"API_AUTH": "off"}  # the hot path measured is reconciliation, not authentication
            with database(workdir, f"pg-http-{hub}") as url, api_server(url, workdir, env=api_env) as api:
                run, probes = asyncio.run(http_run(api.url, hub, n))
                results[hub] = run
                label = "hub  " if hub else "plain"
                for mark, (own, fresh) in probes.items():
                    print(f"HTTP {label} after {mark:>6}: next {own:6.2f} ms, fresh customer {fresh:6.2f} ms")
                with psycopg.connect(url) as conn:
                    assert check_invariants(conn) == []
        hub_run, plain_run = results[True], results[False]
        hub_rate, plain_rate = (r.loaded / r.busy_s for r in (hub_run, plain_run))
        print(f"HTTP largest response: hub {hub_run.largest} B, plain {plain_run.largest} B")
        ratio = hub_rate / plain_rate
        print(
            f"HTTP throughput: hub {hub_rate:.0f} calls/s, plain {plain_rate:.0f} calls/s, ratio {ratio:.2f}"
        )
        broker = start_broker(log=workdir / "broker.log")
        try:
            rates = {}
            for hub in (True, False):
                with database(workdir, f"pg-worker-{hub}") as url:
                    rates[hub] = worker_run(url, broker.bootstrap_servers, hub, n, workdir)
                    with psycopg.connect(url) as conn:
                        row = conn.execute("SELECT max(length(result::text)) FROM processed_event").fetchone()
                    if hub:
                        print(f"worker largest idempotency record: {row[0] if row else 0} B")
            print(
                f"worker throughput: hub {rates[True]:.0f} events/s, plain {rates[False]:.0f} events/s, "
                f"ratio {rates[True] / rates[False]:.2f}"
            )
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
