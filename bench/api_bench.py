"""Load test of POST /identify: `python -m bench.api_bench [--workers N] [--concurrency 16 64]`.

Calls carry an API key, as the service ships (auth on, guardrails on). Comparisons, each level run
against every server in turn and then in reverse, in the same run:
- `--compare-auth-off`: the service with API_AUTH=off, and what auth costs;
- `--floor`: `bench.floor_app`, the least a correct service must do (one round trip per call, a
  commit per new customer), on a copy of the same database, and the service/floor ratio;
- `--cold`: the service on a new, empty, never analyzed database, measured from its first call (a
  new deployment's first seconds), and its ratio to the warm service; with `--cold-analyzed`, its
  tables analyzed while empty.

Starts embedded PostgreSQL, applies the migrations, seeds existing customers (200,000 by default) and
analyzes the tables, as a running shop's database would be, starts the API server process, then drives it
with a realistic mix (60% new customers, 25% repeats, 10% new info on a known customer, 5% requests
bridging two customers) at each concurrency level, and prints throughput and client-side latency.

The load generator runs in its own processes (asyncio + aiohttp, keep-alive connections) on the same
machine, so it competes with the server and PostgreSQL for the cores: on a small machine the
figures are a floor, and the load generator's CPU share is printed so it can be judged. For the
service it also prints how its processes batched the calls (from its /metrics): the mean batch, and
how often and how long a batch lingered for calls its process expected.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import psutil
import psycopg
from psycopg import sql

from bench import compiled
from bench.cpu import postgres_cpu_seconds
from consumer.clients import Scope, create_client
from consumer.core import check_invariants
from consumer.local.embedded import free_port, start_postgres
from consumer.migrate import migrate
from tests.support import FAST_POSTGRES, ROOT
from tests.support.keys import bearer
from tests.support.metrics import samples, value
from tests.support.polling import wait_until
from tests.support.processes import STARTUP_TIMEOUT_S, ApiServer, answers, api_server

# Existing customers, one row each. Without them (and ANALYZE) the planner would plan the first
# minute's queries for an empty table, until autovacuum first analyzes it.
SEED = """
INSERT INTO contact (email, phone_number, link_precedence, created_at, updated_at, source, source_event_id)
SELECT 'existing' || g || '@shop.example', '+1888' || lpad(g::text, 8, '0'), 'primary',
       now() - interval '1 day', now() - interval '1 day', 'urn:bench:seed', g::text
FROM generate_series(1, %s) AS g"""
SERVICE = "service"
MIX = (("new", 0.60), ("repeat", 0.25), ("new_info", 0.10), ("bridge", 0.05))


@dataclass
class Workload:
    """One client process's share of the traffic; identifiers are unique to the process."""

    seed: int
    rng: random.Random = field(init=False)
    customers: list[tuple[str, str]] = field(default_factory=list)
    sent: list[dict[str, str]] = field(default_factory=list)
    counter: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def next_body(self) -> dict[str, str]:
        kind = self.rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
        if kind == "repeat" and self.sent:
            return self.rng.choice(self.sent)
        if kind == "new_info" and self.customers:
            email, phone = self.rng.choice(self.customers)
            body = {"email": email, "phoneNumber": self._phone()}
            if self.rng.random() < 0.5:
                body = {"email": self._email(), "phoneNumber": phone}
        elif kind == "bridge" and len(self.customers) >= 2:
            (email, _), (_, phone) = self.rng.sample(self.customers, 2)
            body = {"email": email, "phoneNumber": phone}
        else:
            body = {"email": self._email(), "phoneNumber": self._phone()}
            self.customers.append((body["email"], body["phoneNumber"]))
        self.sent.append(body)
        return body

    def _email(self) -> str:
        self.counter += 1
        return f"customer{self.seed}x{self.counter}@shop.example"

    def _phone(self) -> str:
        self.counter += 1
        return f"+1{self.seed:03d}{self.counter:08d}"


Figures = tuple[float, float, float, float]
"""A level's throughput (req/s), p99 (s), and the API's and PostgreSQL's CPU per request (s)."""


@dataclass
class ClientResult:
    latencies: list[float]
    errors: int
    cpu_s: float


def run_client(
    url: str, concurrency: int, seconds: float, seed: int, headers: dict[str, str]
) -> ClientResult:
    return asyncio.run(_client(url, concurrency, seconds, seed, headers))


async def _client(
    url: str, concurrency: int, seconds: float, seed: int, headers: dict[str, str]
) -> ClientResult:
    workload = Workload(seed)
    latencies: list[float] = []
    errors = 0
    cpu_start = time.process_time()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        url, connector=connector, timeout=aiohttp.ClientTimeout(30), headers=headers
    ) as http:
        deadline = time.monotonic() + seconds

        async def loop() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                body = workload.next_body()
                start = time.perf_counter()
                async with http.post("/identify", json=body) as response:
                    await response.read()
                latencies.append(time.perf_counter() - start)
                errors += response.status != 200

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return ClientResult(latencies, errors, time.process_time() - cpu_start)


def server_cpu_s(pid: int) -> float:
    """CPU time used so far by the API server: the uvicorn supervisor and its workers."""
    parent = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [parent, *parent.children(recursive=True)])


class Server(Protocol):
    url: str

    @property
    def pid(self) -> int: ...


@contextmanager
def api_process(
    database_url: str,
    workers: int,
    pool_size: int,
    log_dir: Path,
    key: str,
    *,
    auth: bool = True,
    code: Mapping[str, str] | None = None,
) -> Iterator[ApiServer]:
    """The service; `code` is the environment that picks the code it runs (`compiled.environment`)."""
    env = {"API_POOL_MAX_SIZE": str(pool_size), "API_AUTH": "on" if auth else "off", **(code or {})}
    if not auth:
        env["LOG_LEVEL"] = "ERROR"  # not the auth-off warning of each worker
    with api_server(database_url, log_dir, workers=workers, env=env, ready="/readyz", key=key) as server:
        yield server


@dataclass
class FloorServer:
    """`bench.floor_app` as a process of its own, as the service runs."""

    url: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def floor_process(database_url: str, workers: int, pool_size: int, log_dir: Path) -> Iterator[FloorServer]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "API_POOL_MAX_SIZE": str(pool_size)}
    with (log_dir / f"floor-{port}.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.floor_app", "--port", str(port), "--workers", str(workers)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = FloorServer(f"http://127.0.0.1:{port}", process)
    try:
        wait_until(partial(answers, server.url + "/readyz"), STARTUP_TIMEOUT_S, "the floor app")
        yield server
    finally:
        process.terminate()
        process.wait(15)


def copy_database(url: str, name: str) -> str:
    """A copy of the database at `url`, rows and statistics: the floor's own, on the same server, so
    that its rows (no merges) are not checked as the service's."""
    template = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(str(template))
            )
        )
    return psycopg.conninfo.make_conninfo(url, dbname=name)


@contextmanager
def cold_service(
    admin_url: str,
    name: str,
    workers: int,
    pool_size: int,
    log_dir: Path,
    *,
    analyzed: bool = False,
    code: Mapping[str, str] | None = None,
) -> Iterator[ApiServer]:
    """The service on a database of its own, just migrated: empty and never analyzed (or, with
    `analyzed`, analyzed while empty, as autovacuum's first ANALYZE may find it), as a new
    deployment's first seconds."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        if analyzed:
            conn.execute("ANALYZE")
        key = bench_key(conn)
    with api_process(url, workers, pool_size, log_dir, key, code=code) as server:
        yield server


def bench_key(conn: psycopg.Connection[Any]) -> str:
    """The key of the load generator's client."""
    # A storefront's limit, high enough not to bind here: leases are part of what is measured.
    return create_client(conn, "bench", [Scope.IDENTIFY], rate_per_s=20_000, burst=40_000)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def measure(
    url: str, concurrency: int, processes: int, seconds: float, seed: int, headers: dict[str, str]
) -> list[ClientResult]:
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        jobs = [
            pool.apply_async(run_client, (url, share, seconds, seed * 1000 + i, headers))
            for i, share in enumerate(shares)
        ]
        return [job.get() for job in jobs]


def report(
    label: str,
    concurrency: int,
    results: Sequence[ClientResult],
    seconds: float,
    server_cpu_s: float,
    postgres_cpu_s: float,
) -> Figures:
    """Print one level's figures; returns its throughput, p99 and CPU per request (seconds)."""
    latencies = sorted(latency for r in results for latency in r.latencies)
    errors = sum(r.errors for r in results)
    client_cpu = sum(r.cpu_s for r in results)
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    print(
        f"{label:8s} concurrency {concurrency:3d}: {len(latencies) / seconds:7.0f} req/s  "
        f"p50 {quantiles[49] * 1000:6.1f} ms  p99 {quantiles[98] * 1000:6.1f} ms  "
        f"max {latencies[-1] * 1000:6.1f} ms  requests {len(latencies)}  errors {errors}  "
        f"API CPU {server_cpu_s / len(latencies) * 1e6:4.0f} µs/request  "
        f"PostgreSQL CPU {postgres_cpu_s / len(latencies) * 1e6:4.0f} µs/request  "
        f"load-generator CPU {client_cpu / (seconds * (os.cpu_count() or 1)):4.0%} of the machine",
        flush=True,
    )
    n = len(latencies)
    return n / seconds, quantiles[98], server_cpu_s / n, postgres_cpu_s / n


BATCH_COUNTERS = (
    "identity_api_batch_size_count",
    "identity_api_batch_size_sum",
    "identity_api_batch_linger_seconds_count",
    "identity_api_batch_linger_seconds_sum",
)


def batch_counters(url: str) -> dict[str, float]:
    """The service's batching counters from its /metrics (the server sums its processes')."""
    metrics = samples(url)
    return {name: value(metrics, name) for name in BATCH_COUNTERS}


def report_batches(label: str, concurrency: int, counted: dict[str, float]) -> None:
    """Print how the service batched one level's calls: a linger near API_BATCH_LINGER_MS on average
    means the calls its process expected did not come in time."""
    batches = counted["identity_api_batch_size_count"]
    lingers = counted["identity_api_batch_linger_seconds_count"]
    if not batches:
        return
    linger_ms = counted["identity_api_batch_linger_seconds_sum"] / lingers * 1000 if lingers else 0.0
    print(
        f"{label:8s} concurrency {concurrency:3d}: {counted['identity_api_batch_size_sum'] / batches:.1f} "
        f"calls per batch, {lingers / batches:.0%} of batches lingered, {linger_ms:.2f} ms on average",
        flush=True,
    )


def compare(figures: dict[tuple[str, int], Figures], concurrency: int, mode: str, base: str) -> None:
    (rate, p99, cpu, pg), (base_rate, base_p99, base_cpu, base_pg) = (
        figures[mode, concurrency],
        figures[base, concurrency],
    )
    print(
        f"concurrency {concurrency:3d}: {mode} / {base} = {rate / base_rate:.3f} in req/s "
        f"({rate / base_rate - 1:+.1%}), p99 {p99 * 1000:.1f} / {base_p99 * 1000:.1f} ms, "
        f"API CPU {cpu * 1e6:.0f} / {base_cpu * 1e6:.0f} µs per request ({cpu / base_cpu - 1:+.1%}), "
        f"PostgreSQL CPU {pg * 1e6:.0f} / {base_pg * 1e6:.0f} µs per request ({pg / base_pg - 1:+.1%})",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per level")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured time before each level")
    parser.add_argument("--client-processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--pool-size", type=int, default=8, help="database connections per API worker")
    parser.add_argument(
        "--durable", action="store_true", help="keep PostgreSQL's fsync and synchronous_commit on"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--customers", type=int, default=200_000, help="existing customers (200,000)")
    parser.add_argument(
        "--compare-auth-off",
        action="store_true",
        help="also run each level against the service with API_AUTH=off, and print the ratio",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run each level against bench.floor_app (one round trip per call), and print the ratio",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="also run each level against the service on a new, empty, never analyzed database, "
        "measured from its first call, and print its ratio to the warm service",
    )
    parser.add_argument(
        "--cold-analyzed",
        action="store_true",
        help="with --cold: the new database's tables analyzed while empty, as autovacuum's first "
        "ANALYZE may find them",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        choices=range(1, 11),
        help="with a comparison: rounds of each server in turn, then in reverse",
    )
    parser.add_argument(
        "--compiled", action="store_true", help="run the wheel with the core compiled, as the image does"
    )
    args = parser.parse_args(argv)
    others = [
        mode
        for mode, wanted in (("auth off", args.compare_auth_off), ("floor", args.floor), ("cold", args.cold))
        if wanted
    ]
    modes = [SERVICE, *others]
    # Each round runs every server, then again in reverse (service, floor, floor, service), each run
    # with its own warm-up and identifiers: a load that drifts during the level weighs on all alike.
    order = [*modes, *reversed(modes)] * args.rounds if others else modes

    with tempfile.TemporaryDirectory(prefix="api-bench-") as workdir:
        log_dir = Path(workdir)
        pg = start_postgres(
            log_dir / "pgdata", keep_data=False, settings=None if args.durable else FAST_POSTGRES
        )
        try:
            migrate(pg.url)
            with psycopg.connect(pg.url, autocommit=True) as conn:
                conn.execute(SEED, [args.customers])
                conn.execute("ANALYZE")
                key = bench_key(conn)
            headers = bearer(key)
            floor_url = copy_database(pg.url, "floor") if args.floor else ""
            code = compiled.environment(compiled.build(log_dir / "compiled")) if args.compiled else {}
            with ExitStack() as stack:
                start = partial(api_process, pg.url, args.workers, args.pool_size, log_dir, key, code=code)
                servers: dict[str, Server] = {SERVICE: stack.enter_context(start())}
                if args.compare_auth_off:
                    servers["auth off"] = stack.enter_context(start(auth=False))
                if args.floor:
                    servers["floor"] = stack.enter_context(
                        floor_process(floor_url, args.workers, args.pool_size, log_dir)
                    )
                print(
                    f"CPU {cpu_model()}, cores {os.cpu_count()}, API workers {args.workers}, "
                    f"pool {args.pool_size}/worker, client processes {args.client_processes}, "
                    f"existing customers {args.customers}, "
                    f"PostgreSQL {'durable' if args.durable else 'fsync off'}, "
                    f"service {'compiled' if args.compiled else 'interpreted'}",
                    flush=True,
                )
                figures: dict[tuple[str, int], Figures] = {}
                for level, concurrency in enumerate(args.concurrency):
                    results: dict[str, list[ClientResult]] = {mode: [] for mode in modes}
                    server_cpu = dict.fromkeys(modes, 0.0)
                    postgres_cpu = dict.fromkeys(modes, 0.0)
                    batching = {mode: dict.fromkeys(BATCH_COUNTERS, 0.0) for mode in modes}
                    for run, mode in enumerate(order):
                        seed = args.seed * 1000 + level * 100 + run
                        n = args.client_processes
                        with ExitStack() as run_stack:
                            if mode == "cold":
                                cold = run_stack.enter_context(
                                    cold_service(
                                        pg.url,
                                        f"cold_{level}_{run}",
                                        args.workers,
                                        args.pool_size,
                                        log_dir,
                                        analyzed=args.cold_analyzed,
                                        code=code,
                                    )
                                )
                                server: Server = cold
                                run_headers = bearer(cold.key)
                            else:
                                server = servers[mode]
                                run_headers = {} if mode in ("auth off", "floor") else headers
                                measure(server.url, concurrency, n, args.warmup, seed, run_headers)
                            batched = mode != "floor"  # the floor has no batches
                            batches_before = batch_counters(server.url) if batched else {}
                            cpu_before = server_cpu_s(server.pid)
                            postgres_before = postgres_cpu_seconds(log_dir / "pgdata")
                            results[mode] += measure(
                                server.url, concurrency, n, args.seconds, seed + 50, run_headers
                            )
                            server_cpu[mode] += server_cpu_s(server.pid) - cpu_before
                            postgres_cpu[mode] += postgres_cpu_seconds(log_dir / "pgdata") - postgres_before
                            if batched:
                                batches_after = batch_counters(server.url)
                                for name in BATCH_COUNTERS:
                                    batching[mode][name] += batches_after[name] - batches_before[name]
                    for mode, runs in results.items():
                        seconds = args.seconds * order.count(mode)
                        figures[mode, concurrency] = report(
                            mode, concurrency, runs, seconds, server_cpu[mode], postgres_cpu[mode]
                        )
                        report_batches(mode, concurrency, batching[mode])
                for concurrency in args.concurrency:
                    for mode in others:
                        compare(
                            figures, concurrency, *(("cold", SERVICE) if mode == "cold" else (SERVICE, mode))
                        )
            with psycopg.connect(pg.url) as conn:
                violations = check_invariants(conn)
                contacts = conn.execute("SELECT count(*) FROM contact").fetchone()
            print(f"contacts {contacts[0] if contacts else 0}, invariant violations {len(violations)}")
        finally:
            pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
