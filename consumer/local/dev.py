"""`identity dev`: the whole service on this machine, on embedded PostgreSQL and the embedded broker.

Starts PostgreSQL (data kept in `DEV_DATA_DIR`, `--clean` to start empty) and Tansu, creates the topics,
applies migrations, runs the worker, the relay and the API as child processes with their logs prefixed
by component, and writes `DEV_DATA_DIR/env` with the exports other commands need (`identity check`,
`checkout-events`) to reach this stack.

Ctrl+C (or SIGTERM) first waits, bounded and with progress, until the worker has processed every event
and the relay published every outbox row: the embedded broker keeps events in memory only, so what is
still in it when it stops is gone. A second Ctrl+C stops at once, saying what is lost. Then children
stop first, then the broker and PostgreSQL.
"""

from __future__ import annotations

import os
import shlex
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

import psycopg

from consumer import queries
from consumer.clients import Scope, authenticate, create_client, list_clients, rotate_key
from consumer.config import Settings
from consumer.kafka import GroupLag
from consumer.local.embedded import create_topics, start_broker, start_postgres
from consumer.logs import configure_logging
from consumer.migrate import migrate

COMPONENTS = ("worker", "relay", "api")
LOCAL_CLIENT = "local-dev"
KEY_FILE = "api-key"

_COLOURS = {"worker": "36", "relay": "35", "api": "32", "dev": "1"}
_print_lock = threading.Lock()
# How long Ctrl+C waits for the worker and the relay to catch up before stopping anyway.
DRAIN_TIMEOUT_S = 120.0


def run_dev(settings: Settings, *, clean: bool = False, demo: bool = False) -> int:
    data_dir = Path(settings.dev_data_dir).resolve()
    host, _, port = settings.kafka_bootstrap_servers.partition(":")
    if host not in {"127.0.0.1", "localhost"} or not port.isdigit():
        say("dev", "KAFKA_BOOTSTRAP_SERVERS must be 127.0.0.1:PORT: dev runs its own broker there")
        return 2
    if clean and (data_dir / "pgdata").exists():
        shutil.rmtree(data_dir / "pgdata")
    data_dir.mkdir(parents=True, exist_ok=True)

    # Dev reports its own progress; its libraries' logs (migrations, the embedded server) would be JSON
    # noise among the children's console lines, so only their warnings show, as console lines too.
    configure_logging(settings.model_copy(update={"log_format": "console", "log_level": "WARNING"}))
    stopping, hurry = threading.Event(), threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: hurry.set() if stopping.is_set() else stopping.set())

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
        key_file = data_dir / KEY_FILE
        api_key = local_api_key(postgres.url, key_file)
        say("dev", f"API key of the local client (every scope) kept in {key_file}")

        env = {
            **os.environ,
            "DATABASE_URL": postgres.url,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "LOG_FORMAT": os.environ.get("LOG_FORMAT", "console"),
        }
        children = {name: stack.enter_context(_child(name, env)) for name in COMPONENTS}
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        _announce(settings, postgres.url, broker.bootstrap_servers, api_url)
        _write_env(
            data_dir / "env",
            {
                "DATABASE_URL": postgres.url,
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "IDENTITY_API_KEY": api_key,
            },
        )
        if not _await_healthy(api_url, list(children.values()), stopping):
            return 0 if stopping.is_set() else 1
        say("dev", f"ready: POST {api_url}/identify, docs at {api_url}/docs; Ctrl+C stops everything")
        if demo:
            from consumer.local.demo import run_demo

            run_demo(settings, broker.bootstrap_servers, api_url, api_key, say=lambda text: say("demo", text))
        while not stopping.wait(0.5):
            if failed := {n: c.returncode for n, c in children.items() if c.poll() is not None}:
                names = ", ".join(f"{name} (exit {code})" for name, code in failed.items())
                say("dev", f"stopping: {names} exited")
                return 1
        say("dev", "stopping: waiting for the worker and the relay to catch up (Ctrl+C again: stop now)")
        _drain(settings, postgres.url, broker.bootstrap_servers, list(children.values()), hurry)
        say("dev", "stopping")
    return 0


def local_api_key(database_url: str, key_file: Path) -> str:
    """The local client's key (every scope): the one in `key_file` while it is valid, else a new one."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        if key_file.exists() and authenticate(conn, key := key_file.read_text().strip()):
            return key
        local = [c for c in list_clients(conn) if c.client.name.startswith(LOCAL_CLIENT)]
        if active := [c.client.name for c in local if c.revoked_at is None]:
            key = rotate_key(conn, active[0], grace_s=0)
        else:  # names are never reused: after a revocation, the next local client gets a number
            key = create_client(conn, f"{LOCAL_CLIENT}-{len(local)}" if local else LOCAL_CLIENT, Scope)
    key_file.touch(mode=0o600)
    key_file.chmod(0o600)  # a key file left by an older run may have other permissions
    key_file.write_text(key + "\n")
    return key


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
            say("dev", f"metrics     {name}: http://{settings.metrics_host}:{port}/metrics")


def _write_env(path: Path, variables: dict[str, str]) -> None:
    """Write the exports other commands need, and say how to use them."""
    exports = [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
    path.touch(mode=0o600)
    path.chmod(0o600)  # it holds the local API key
    path.write_text(
        "# Written by `identity dev`: `source` it to reach its stack from another shell.\n"
        + "\n".join(exports)
        + "\n"
    )
    say(
        "dev", f"other commands (identity check, checkout-events, curl) reach this stack after: source {path}"
    )
    for line in exports:
        say("dev", f"  {line}")


def _drain(
    settings: Settings,
    database_url: str,
    bootstrap: str,
    children: list[subprocess.Popen[str]],
    hurry: threading.Event,
) -> None:
    """Wait until every event is processed and every outbox row published, at most DRAIN_TIMEOUT_S."""
    lag = GroupLag(bootstrap, settings.checkout_topic, settings.kafka_group_id)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    reported = 0.0
    try:
        while True:
            behind, unpublished = lag.lag(), _unpublished(database_url)
            if not behind and not unpublished:
                say("dev", "every event is processed and every output event published")
                return
            died = [c for c in children if c.poll() is not None]
            if hurry.is_set() or died or time.monotonic() > deadline:
                why = "a component exited" if died else "asked to" if hurry.is_set() else "timed out"
                say("dev", f"stopping before the stack caught up ({why}):")
                say(
                    "dev",
                    f"  {behind} checkout event(s) not processed are lost: the embedded broker "
                    "keeps them in memory only",
                )
                say(
                    "dev",
                    f"  {unpublished} output event(s) not published stay in the outbox; the relay "
                    "publishes them at the next start",
                )
                return
            if time.monotonic() - reported >= 2:
                say("dev", f"  {behind} event(s) to process, {unpublished} output event(s) to publish")
                reported = time.monotonic()
            hurry.wait(0.5)
    finally:
        lag.close()


def _unpublished(database_url: str) -> int:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute(queries.OUTBOX_BACKLOG).fetchone()
    return int(row[0]) if row else 0


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
