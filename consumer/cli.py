"""`identity`: the service's processes and operator commands (also `python -m consumer`)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Sequence

import psycopg

from consumer.config import Settings, get_settings
from consumer.core.links import Kind
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
    erase = commands.add_parser("erase", help="erase an email or a phone number everywhere (rule 17)")
    erase_value = erase.add_mutually_exclusive_group(required=True)
    erase_value.add_argument("--email")
    erase_value.add_argument("--phone")
    erase.add_argument("--dry-run", action="store_true", help="show what would happen, change nothing")
    erase.add_argument("--json", action="store_true", help="print the API's JSON answer")
    explain = commands.add_parser("explain", help="why an identity's contacts are linked (rule 18)")
    explain_what = explain.add_mutually_exclusive_group(required=True)
    explain_what.add_argument("--contact-id", type=int)
    explain_what.add_argument("--email", help="explain the identity of the oldest live row holding it")
    explain_what.add_argument("--phone", help="explain the identity of the oldest live row holding it")
    explain.add_argument("--to", type=int, metavar="ID", help="also the path to this contact")
    explain.add_argument("--history-after", metavar="CURSOR", help="the next page of a long history")
    explain.add_argument("--json", action="store_true", help="print the API's JSON document")
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
    if command == "erase":
        return _erase(settings, args)
    if command == "explain":
        return _explain(settings, args)
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


def _erase(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.core import Guardrails
    from consumer.core.erasure import erase
    from consumer.explain_text import erasure_text
    from consumer.normalize import IdentifierError

    try:
        kind, value = _one_value(settings, args.email, args.phone)
    except IdentifierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with psycopg.connect(settings.database_url) as conn:
        erasure = erase(
            conn, kind, value, f"cli:{getpass.getuser()}", Guardrails.of(settings), dry_run=args.dry_run
        )
    document = erasure.document()
    print(json.dumps(document, indent=2) if args.json else erasure_text(document, args.dry_run))
    return 0


def _explain(settings: Settings, args: argparse.Namespace) -> int:
    from consumer import queries
    from consumer.core import Guardrails
    from consumer.core.explain import BadCursor, NotInIdentity, explain
    from consumer.explain_text import explanation_text
    from consumer.normalize import IdentifierError

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        contact_id: int | None = args.contact_id
        if contact_id is None:
            try:
                kind, value = _one_value(settings, args.email, args.phone)
            except IdentifierError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            found = conn.execute(queries.ROW_HOLDING, {kind: value, _other(kind): None}).fetchone()
            contact_id = None if found is None else found[0]
        try:
            document = (
                None
                if contact_id is None
                else explain(
                    conn,
                    contact_id,
                    to=args.to,
                    guard=Guardrails.of(settings),
                    history_after=args.history_after,
                )
            )
        except (NotInIdentity, BadCursor) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if document is None:
        print("error: no live contact has this id or value", file=sys.stderr)
        return 1
    print(json.dumps(document, indent=2) if args.json else explanation_text(document))
    return 0


def _one_value(settings: Settings, email: str | None, phone: str | None) -> tuple[Kind, str]:
    """The normalized value of --email or --phone (exactly one is set)."""
    from consumer.normalize import Normalizer

    normalizer = Normalizer.from_settings(settings)
    ids = normalizer.identifiers(email, phone)
    return ("email", ids.email) if ids.email is not None else ("phone", ids.partition_key)


def _other(kind: Kind) -> Kind:
    return "phone" if kind == "email" else "email"


if __name__ == "__main__":
    sys.exit(main())
