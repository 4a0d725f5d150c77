"""`identity clients create|list|rotate|revoke` and `identity audit`: API access for operators (rule 19).

Run them with the owner role's DATABASE_URL: the API's role may only read clients (docs/security.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from consumer import clients
from consumer.audit import read_audit
from consumer.config import Settings


def register(commands: Any) -> None:
    """Add the commands to `identity`'s subparsers; each sets its handler as `run`."""
    parser = commands.add_parser("clients", help="API clients and their keys: create, list, rotate, revoke")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a client; prints its API key alone on stdout")
    create.add_argument("name", help="1-63 characters: a-z, 0-9, '.', '_', '-'")
    create.add_argument("--scopes", required=True, help="comma-separated: identify, read, admin")
    create.add_argument("--rate", type=float, help="requests per second (default: API_RATE_LIMIT_PER_S)")
    create.add_argument("--burst", type=int, help="bucket size (default: API_RATE_LIMIT_BURST)")
    create.set_defaults(run=_create)
    actions.add_parser("list", help="every client: scopes, rate limit, key ids, status").set_defaults(
        run=_list
    )
    rotate = actions.add_parser("rotate", help="a new key for a client; prints it alone on stdout")
    rotate.add_argument("name")
    rotate.add_argument(
        "--grace", type=float, default=86_400, help="seconds the current keys keep working (default 1 day)"
    )
    rotate.set_defaults(run=_rotate)
    revoke = actions.add_parser("revoke", help="revoke a client and all its keys")
    revoke.add_argument("name")
    revoke.set_defaults(run=_revoke)
    audit = commands.add_parser("audit", help="print the audit log: reads and admin actions, oldest first")
    audit.add_argument("--since", type=_timestamp, help="ISO 8601 time, e.g. 2026-11-30 or 2026-11-30T08:00Z")
    audit.add_argument("--client", help="only this client's actions")
    audit.set_defaults(run=_audit)


def _create(args: argparse.Namespace, settings: Settings) -> int:
    def create(conn: psycopg.Connection[Any]) -> None:
        scopes = clients.parse_scopes(args.scopes)
        print(clients.create_client(conn, args.name, scopes, rate_per_s=args.rate, burst=args.burst))

    return _run(settings, create)


def _rotate(args: argparse.Namespace, settings: Settings) -> int:
    return _run(settings, lambda conn: print(clients.rotate_key(conn, args.name, grace_s=args.grace)))


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    def revoke(conn: psycopg.Connection[Any]) -> None:
        if not clients.revoke_client(conn, args.name):
            raise clients.ClientError(f"no active client named {args.name!r}")
        print(f"revoked {args.name}; API processes refuse its keys within API_AUTH_CACHE_TTL_S")

    return _run(settings, revoke)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    def show(conn: psycopg.Connection[Any]) -> None:
        for info in clients.list_clients(conn):
            c = info.client
            status = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
            rate = f"{c.rate_per_s or 'default'}/s burst {c.burst or 'default'}"
            keys = ",".join(info.key_ids) or "-"
            print(f"{c.name}\t{','.join(sorted(c.scopes))}\t{rate}\tkeys {keys}\t{status}")

    return _run(settings, show)


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    def show(conn: psycopg.Connection[Any]) -> None:
        for entry in read_audit(conn, since=args.since, client=args.client):
            print(f"{entry.at.isoformat()}\t{entry.client}\t{entry.action}\t{','.join(map(str, entry.ids))}")

    return _run(settings, show)


def _run(settings: Settings, work: Callable[[psycopg.Connection[Any]], None]) -> int:
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            work(conn)
    except clients.ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected an ISO 8601 time, e.g. 2026-11-30T08:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
