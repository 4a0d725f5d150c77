"""`identity`: the service's processes and operator commands (also `python -m consumer`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import psycopg

from consumer.config import Settings, get_settings
from consumer.logs import configure_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="identity", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("migrate", help="apply pending database migrations")
    commands.add_parser(
        "check", help="verify the identity graph's invariants; exits 1 on a violation, 2 if it cannot check"
    )
    commands.add_parser("worker", help="consume checkout events and reconcile them")
    commands.add_parser("relay", help="publish outbox rows to the output topics")
    # Its options belong to consumer.worker.replay, which parses them itself.
    commands.add_parser(
        "dlq-replay", add_help=False, help="send dead letters back to the input topic (--help for options)"
    )
    api = commands.add_parser("api", help="serve POST /identify with uvicorn")
    api.add_argument("--host", help="bind address (default: API_HOST)")
    api.add_argument("--port", type=int, help="port (default: API_PORT)")
    api.add_argument("--workers", type=int, help="uvicorn worker processes (default: API_WORKERS)")
    clients = commands.add_parser("clients", help="API clients and their keys: create, list, rotate, revoke")
    client_commands = clients.add_subparsers(dest="clients_command", required=True, metavar="ACTION")
    create = client_commands.add_parser("create", help="create a client; prints its API key alone on stdout")
    create.add_argument("name", help="1-63 characters: a-z, 0-9, '.', '_', '-'")
    create.add_argument("--scopes", required=True, help="comma-separated: identify, read, admin")
    create.add_argument("--rate", type=float, help="requests per second (default: API_RATE_LIMIT_PER_S)")
    create.add_argument("--burst", type=int, help="bucket size (default: API_RATE_LIMIT_BURST)")
    client_commands.add_parser("list", help="every client: scopes, rate limit, key ids, status")
    rotate = client_commands.add_parser("rotate", help="a new key for a client; prints it alone on stdout")
    rotate.add_argument("name")
    rotate.add_argument(
        "--grace", type=float, default=86_400, help="seconds the current keys keep working (default 1 day)"
    )
    revoke = client_commands.add_parser("revoke", help="revoke a client and all its keys")
    revoke.add_argument("name")
    audit = commands.add_parser("audit", help="print the audit log: reads and admin actions, oldest first")
    audit.add_argument("--since", type=_timestamp, help="ISO 8601 time, e.g. 2026-11-30 or 2026-11-30T08:00Z")
    audit.add_argument("--client", help="only this client's actions")
    dev = commands.add_parser("dev", help="run the whole stack locally on embedded PostgreSQL and Kafka")
    dev.add_argument("--clean", action="store_true", help="start from an empty database")
    dev.add_argument("--demo", action="store_true", help="replay the hillvalley story and show the results")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "dlq-replay":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")

    settings = get_settings()
    configure_logging(settings)
    command: str = args.command
    if command == "migrate":
        from consumer.migrate import migrate

        applied = migrate(settings.database_url)
        print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
        return 0
    if command == "check":
        return _check(settings)
    if command == "clients":
        return _clients(settings, args)
    if command == "audit":
        return _audit(settings, args.since, args.client)
    if command == "worker":
        from consumer.worker import run_worker

        return run_worker(settings)
    if command == "dlq-replay":
        from consumer.worker.replay import main as replay_main

        return replay_main(extra)
    if command == "relay":
        from consumer.relay import run_relay

        return run_relay(settings)
    if command == "api":
        from consumer.api import run_api

        return run_api(settings, host=args.host, port=args.port, workers=args.workers)
    from consumer.dev import run_dev

    return run_dev(settings, clean=args.clean, demo=args.demo)


def _clients(settings: Settings, args: argparse.Namespace) -> int:
    from consumer import clients

    try:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            action: str = args.clients_command
            if action == "create":
                scopes = clients.parse_scopes(args.scopes)
                print(clients.create_client(conn, args.name, scopes, rate_per_s=args.rate, burst=args.burst))
            elif action == "rotate":
                print(clients.rotate_key(conn, args.name, grace_s=args.grace))
            elif action == "revoke":
                if not clients.revoke_client(conn, args.name):
                    raise clients.ClientError(f"no active client named {args.name!r}")
                print(f"revoked {args.name}; API processes refuse its keys within API_AUTH_CACHE_TTL_S")
            else:
                for info in clients.list_clients(conn):
                    c = info.client
                    status = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
                    rate = f"{c.rate_per_s or 'default'}/s burst {c.burst or 'default'}"
                    keys = ",".join(info.key_ids) or "-"
                    print(f"{c.name}\t{','.join(sorted(c.scopes))}\t{rate}\tkeys {keys}\t{status}")
    except clients.ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _audit(settings: Settings, since: datetime | None, client: str | None) -> int:
    from consumer.audit import read_audit

    with psycopg.connect(settings.database_url) as conn:
        for entry in read_audit(conn, since=since, client=client):
            print(f"{entry.at.isoformat()}\t{entry.client}\t{entry.action}\t{','.join(map(str, entry.ids))}")
    return 0


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected an ISO 8601 time, e.g. 2026-11-30T08:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check(settings: Settings) -> int:
    from consumer.core import check_invariants

    try:
        with psycopg.connect(settings.database_url) as conn:
            violations = check_invariants(conn)
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
