"""`identity block add|remove|list` and `identity guard scan`: the guardrails for operators (rules 12-16)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

import psycopg

from consumer.config import Settings
from consumer.core import Guardrails
from consumer.core.blocking import (
    BlockRefused,
    BlockResult,
    block_value,
    guard_scan,
    list_blocks,
    unblock_value,
)
from consumer.core.links import values_of
from consumer.normalize import IdentifierError, Normalizer

ACTOR = "identity CLI"


def register(commands: Any) -> None:
    """Add the commands to `identity`'s subparsers; each sets its handler as `run`."""
    block = commands.add_parser("block", help="review, add and remove blocked values (docs/guardrails.md)")
    actions = block.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="block an email or a phone, splitting the identities it linked",
        description="block an email or a phone, splitting the identities it linked",
    )
    value = add.add_mutually_exclusive_group(required=True)
    value.add_argument("--email", help="the email to block (normalized as the API does)")
    value.add_argument("--phone", help="the phone number to block (normalized as the API does)")
    add.add_argument("--note", help="why, for the reviewers")
    add.set_defaults(run=_add)
    remove = actions.add_parser(
        "remove",
        help="remove a block, merging again the identities its value links",
        description="remove a block, merging again the identities its value links",
    )
    remove.add_argument("block_id", type=int, metavar="ID", help="the block's id (see `identity block list`)")
    remove.set_defaults(run=_remove)
    listing = actions.add_parser(
        "list", help="the blocklist, oldest first", description="the blocklist, oldest first"
    )
    listing.add_argument("--reason", choices=["operator", "fan_out", "identity_cap", "builtin"])
    listing.add_argument("--all", action="store_true", help="also the removed blocks")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=_list)
    guard = commands.add_parser(
        "guard",
        help="apply the guardrails to data stored before them",
        description="apply the guardrails to data stored before them",
    )
    scans = guard.add_subparsers(dest="action", required=True, metavar="ACTION")
    scan = scans.add_parser(
        "scan",
        help="block fan-out values and split identities over the cap (rules 13-15), in one transaction",
    )
    scan.add_argument("--dry-run", action="store_true", help="print what it would do, change nothing")
    scan.set_defaults(run=_scan)


def _add(args: argparse.Namespace, settings: Settings) -> int:
    try:
        ids = Normalizer.from_settings(settings).identifiers(args.email, args.phone)
    except IdentifierError as exc:
        return _fail(str(exc))
    ((kind, value),) = values_of(ids.email, ids.phone)
    with psycopg.connect(settings.database_url) as conn:
        try:
            result = block_value(conn, kind, value, Guardrails.of(settings), added_by=ACTOR, note=args.note)
        except BlockRefused as exc:
            return _fail(str(exc))
    print(f"blocked {kind} as block {result.block_id}")
    _print_splits(result)
    return 0


def _remove(args: argparse.Namespace, settings: Settings) -> int:
    with psycopg.connect(settings.database_url) as conn:
        try:
            result = unblock_value(conn, args.block_id, Guardrails.of(settings), removed_by=ACTOR)
        except BlockRefused as exc:
            return _fail(str(exc))
    print(f"removed block {result.block_id}")
    for merge, view in result.merges:
        merged = ", ".join(map(str, merge.merged_primary_ids))
        rows = len(view.secondary_ids) + 1
        print(f"  merged identities {merged} into {merge.surviving_primary_id} ({rows} rows)")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    with psycopg.connect(settings.database_url) as conn:
        after = 0
        while page := list_blocks(conn, reason=args.reason, after_id=after, include_removed=args.all):
            for b in page:
                if args.json:
                    print(json.dumps(asdict(b), default=str))
                else:
                    removed = b.removed_at
                    state = "" if removed is None else f"  removed {removed:%Y-%m-%d} by {b.removed_by}"
                    shown = "(erased)" if b.value is None else b.value
                    print(f"{b.id:>6}  {b.kind:<5}  {b.reason:<12}  {shown}  by {b.added_by}{state}")
            after = page[-1].id
    return 0


def _scan(args: argparse.Namespace, settings: Settings) -> int:
    with psycopg.connect(settings.database_url) as conn:
        scan = guard_scan(conn, Guardrails.of(settings), dry_run=args.dry_run)
    verb = "would block" if args.dry_run else "blocked"
    for kind, value, reason, result in scan.blocks:
        print(f"{verb} {kind} {value} ({reason})" + ("" if args.dry_run else f" as block {result.block_id}"))
        _print_splits(result)
    print(f"{len(scan.blocks)} value(s) {verb}" + (" (dry run: nothing changed)" if args.dry_run else ""))
    return 0


def _print_splits(result: BlockResult) -> None:
    for split in result.splits:
        print(f"  split identity {split.former_primary_id} into {len(split.identities)}")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
