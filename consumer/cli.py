"""`identity`: the service's processes and operator commands (also `python -m consumer`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import psycopg

from consumer import clients_cli, guard_cli, lifecycle_cli
from consumer.config import Settings, get_settings
from consumer.logs import configure_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="identity", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _command(commands, "migrate", "apply pending database migrations (from MIGRATIONS_DIR) to DATABASE_URL")
    _command(
        commands,
        "check",
        "verify the identity graph's invariants on DATABASE_URL; exit 1 on a violation, 2 if it cannot check",
    )
    _command(
        commands,
        "worker",
        "consume checkout events from CHECKOUT_TOPIC and reconcile them into DATABASE_URL; "
        "SIGTERM drains, commits and exits",
    )
    _command(commands, "relay", "publish outbox rows to the output topics (one leader, others stand by)")
    # Its options belong to consumer.worker.replay, which parses them itself.
    commands.add_parser(
        "dlq-replay", add_help=False, help="send dead letters back to the input topic (--help for options)"
    )
    health = _command(
        commands,
        "health",
        "exit 0 if the worker's or relay's loop went round within --max-age seconds (a container health "
        "check; it reads the process's metrics endpoint on this host)",
    )
    health.add_argument("component", choices=["worker", "relay"])
    health.add_argument(
        "--max-age", type=float, default=60.0, help="seconds since the last round (default: %(default)s)"
    )
    api = _command(commands, "api", "serve POST /identify and the other routes with uvicorn")
    api.add_argument("--host", help="bind address (default: API_HOST)")
    api.add_argument("--port", type=int, help="port (default: API_PORT)")
    api.add_argument("--workers", type=int, help="uvicorn worker processes (default: API_WORKERS)")
    dev = _command(
        commands,
        "dev",
        "run the whole stack locally on embedded PostgreSQL and the embedded Kafka-compatible broker: "
        "migrations, worker, relay and API on localhost; Ctrl+C stops everything",
    )
    dev.add_argument("--clean", action="store_true", help="start from an empty database")
    dev.add_argument("--demo", action="store_true", help="replay the hillvalley story and show the results")
    guard_cli.register(commands)
    clients_cli.register(commands)
    lifecycle_cli.register(commands)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "dlq-replay":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")

    settings = get_settings()
    configure_logging(settings)
    if run := getattr(args, "run", None):  # commands registered by their own module
        code: int = run(args, settings)
        return code
    command: str = args.command
    if command == "migrate":
        from consumer.migrate import migrate

        applied = migrate(settings.database_url)
        print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
        return 0
    if command == "check":
        return _check(settings)
    if command == "worker":
        from consumer.worker import run_worker

        return run_worker(settings)
    if command == "dlq-replay":
        from consumer.worker.replay import main as replay_main

        return replay_main(extra)
    if command == "relay":
        from consumer.relay import run_relay

        return run_relay(settings)
    if command == "health":
        from consumer.health import check_loop

        return check_loop(settings, args.component, args.max_age)
    if command == "api":
        from consumer.api import run_api

        return run_api(settings, host=args.host, port=args.port, workers=args.workers)
    from consumer.local.dev import run_dev

    return run_dev(settings, clean=args.clean, demo=args.demo)


def _command(commands: Any, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand whose `--help` says what it does (the same sentence as in `identity --help`)."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=text, description=text)
    return parser


def _check(settings: Settings) -> int:
    from consumer.core import Guardrails, check_invariants

    try:
        with psycopg.connect(settings.database_url) as conn:
            violations = check_invariants(conn, Guardrails.of(settings))
    except psycopg.Error as exc:
        print(f"error: could not check the database: {exc}", file=sys.stderr)
        return 2
    if not violations:
        print("ok: every invariant holds")
        return 0
    for v in violations:
        examples = ", ".join(map(str, v.contact_ids))
        print(f"VIOLATION {v.rule}: {v.count} contact(s), e.g. ids {examples}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
