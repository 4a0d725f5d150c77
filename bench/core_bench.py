"""The reconciliation core's cost per transaction, without HTTP or Kafka: `python -m bench.core_bench`.

Applies POST /identify's inputs (the API benchmark's realistic mix, built as the route builds them:
no Idempotency-Key, guardrails on) with `reconcile_batch` on one connection, in batches of each size
given, on durable embedded PostgreSQL seeded and analyzed as in `bench.api_bench` (or the server at
`--database-url`). Prints, per batch size, the CPU per transaction of this process and of PostgreSQL
and the wall time per transaction, then a least-squares fit of this process's CPU: a fixed cost per
transaction plus a cost per input.

Why: at concurrency 16 an API process's batches hold about eight calls, and the fixed cost of each
transaction, most of it psycopg's pipeline machinery, decides its throughput (docs/benchmarks.md).
This measures that cost apart from the HTTP stack, whose run-to-run noise hides small changes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from itertools import count
from pathlib import Path
from typing import Any

import psycopg

from bench.api_bench import SEED, Workload, cpu_model
from bench.cpu import postgres_cpu_seconds
from consumer.config import Settings
from consumer.core import Guardrails, Input, check_invariants, reconcile_batch
from consumer.local.embedded import start_postgres
from consumer.migrate import migrate
from consumer.normalize import Normalizer


def inputs(seed: int) -> Iterator[Input]:
    """Endless inputs of the realistic mix, as `POST /identify` builds them for calls without a key."""
    workload, normalizer = Workload(seed), Normalizer()
    for n in count():
        body = workload.next_body()
        yield Input(
            normalizer.identifiers(body["email"], body["phoneNumber"]),
            source="urn:bench:core",
            event_id=f"call-{n}",
            publish_unchanged=False,
            idempotent=False,
            keeps_answer=True,
        )


def fit(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least squares of cost = fixed + per_input * batch size: (fixed, per_input)."""
    slope, intercept = statistics.linear_regression([b for b, _ in points], [c for _, c in points])
    return intercept, slope


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64])
    parser.add_argument("--inputs", type=int, default=4_000, help="inputs applied per batch size")
    parser.add_argument("--customers", type=int, default=200_000, help="existing customers (200,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", help="an empty database to use instead of embedded PostgreSQL")
    args = parser.parse_args(argv)

    with ExitStack() as stack:
        pgdata: Path | None = None
        url = args.database_url
        if url is None:
            pgdata = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="core-bench-"))) / "pgdata"
            postgres = start_postgres(pgdata, keep_data=False)  # durable: PostgreSQL's defaults
            stack.callback(postgres.stop)
            url = postgres.url
        migrate(url)
        # Autocommit, as the service's connections (`consumer.db.connection_kwargs`).
        conn: psycopg.Connection[Any] = stack.enter_context(psycopg.connect(url, autocommit=True))
        conn.execute(SEED, [args.customers])
        conn.execute("ANALYZE")
        guard = Guardrails.of(Settings())
        source = inputs(args.seed)
        print(f"CPU {cpu_model()}, existing customers {args.customers}, PostgreSQL durable")
        points = []
        for size in args.batch_sizes:
            batches = max(args.inputs // size, 20)
            for _ in range(batches // 4):  # warm-up: prepared statements, caches
                reconcile_batch(conn, [next(source) for _ in range(size)], guard)
            # Built beforehand: parsing and normalizing are the API's work, not the core's.
            work = [[next(source) for _ in range(size)] for _ in range(batches)]
            cpu, wall = time.process_time(), time.perf_counter()
            pg = postgres_cpu_seconds(pgdata) if pgdata else 0.0
            for batch in work:
                reconcile_batch(conn, batch, guard)
            cpu_us = (time.process_time() - cpu) / batches * 1e6
            wall_us = (time.perf_counter() - wall) / batches * 1e6
            pg_us = ((postgres_cpu_seconds(pgdata) - pg) / batches * 1e6) if pgdata else float("nan")
            points.append((size, cpu_us))
            print(
                f"batch {size:4d}: core CPU {cpu_us:7.0f} µs/transaction {cpu_us / size:6.0f} µs/input  "
                f"PostgreSQL CPU {pg_us:7.0f} µs/transaction  wall {wall_us:7.0f} µs/transaction"
            )
        fixed, per_input = fit(points)
        print(f"core CPU = {fixed:.0f} µs per transaction + {per_input:.0f} µs per input (least squares)")
        violations = check_invariants(conn, guard)
        print(f"invariant violations {len(violations)}")
        return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
