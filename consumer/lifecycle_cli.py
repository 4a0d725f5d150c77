"""`identity erase` and `identity explain` (rules 17-18): the API's documents, as JSON or as text."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from typing import Any

import psycopg

from consumer import queries
from consumer.config import Settings
from consumer.core import Guardrails
from consumer.core.erasure import erase
from consumer.core.explain import BadCursor, NotInIdentity, explain
from consumer.core.links import Kind
from consumer.guard_cli import ACTOR
from consumer.normalize import IdentifierError, Normalizer


def register(commands: Any) -> None:
    """Add the commands to `identity`'s subparsers; each sets its handler as `run`."""
    erasing = commands.add_parser("erase", help="erase an email or a phone everywhere (docs/erasure.md)")
    value = erasing.add_mutually_exclusive_group(required=True)
    value.add_argument("--email", help="the email to erase (normalized as the API does)")
    value.add_argument("--phone", help="the phone number to erase (normalized as the API does)")
    erasing.add_argument("--dry-run", action="store_true", help="print what it would do, change nothing")
    erasing.add_argument("--json", action="store_true", help="print the API's JSON answer")
    erasing.set_defaults(run=_erase)
    explaining = commands.add_parser("explain", help="why contacts are one identity (docs/explain.md)")
    what = explaining.add_mutually_exclusive_group(required=True)
    what.add_argument("--contact-id", type=int, help="any live contact id of the identity")
    what.add_argument("--email", help="explain the identity of the oldest live row holding it")
    what.add_argument("--phone", help="explain the identity of the oldest live row holding it")
    explaining.add_argument("--to", type=int, metavar="ID", help="also the path to this contact")
    explaining.add_argument("--history-after", metavar="CURSOR", help="the next page of a long history")
    explaining.add_argument("--json", action="store_true", help="print the API's JSON document")
    explaining.set_defaults(run=_explain)


def _erase(args: argparse.Namespace, settings: Settings) -> int:
    try:
        kind, value = _one_value(settings, args.email, args.phone)
    except IdentifierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with psycopg.connect(settings.database_url) as conn:
        erasure = erase(conn, kind, value, ACTOR, Guardrails.of(settings), dry_run=args.dry_run)
    document = erasure.document()
    print(json.dumps(document, indent=2) if args.json else erasure_text(document, args.dry_run))
    return 0


def _explain(args: argparse.Namespace, settings: Settings) -> int:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        contact_id: int | None = args.contact_id
        try:
            if contact_id is None:
                kind, value = _one_value(settings, args.email, args.phone)
                other = "phone" if kind == "email" else "email"
                found = conn.execute(queries.ROW_HOLDING, {kind: value, other: None}).fetchone()
                contact_id = None if found is None else found[0]
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
        except (IdentifierError, NotInIdentity, BadCursor) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if document is None:
        print("error: no live contact has this id or value", file=sys.stderr)
        return 1
    print(json.dumps(document, indent=2) if args.json else explanation_text(document))
    return 0


def _one_value(settings: Settings, email: str | None, phone: str | None) -> tuple[Kind, str]:
    """The normalized value of --email or --phone (exactly one is set)."""
    ids = Normalizer.from_settings(settings).identifiers(email, phone)
    return ("email", ids.email) if ids.email is not None else ("phone", ids.partition_key)


def explanation_text(document: dict[str, Any]) -> str:
    """The explanation as a tree from the primary, then blocked values, history and the path."""
    rows = {row["id"]: row for row in document["rows"]}
    children: defaultdict[int | None, list[int]] = defaultdict(list)
    for row in document["rows"]:
        children[row["link"]["to"] if row["link"] else None].append(row["id"])
    contact = document["contact"]
    lines = [
        f"Identity of contact #{document['contactId']}: primary #{contact['primaryContactId']}, "
        f"{len(rows)} row(s), {len(contact['emails'])} email(s), {len(contact['phoneNumbers'])} phone(s)"
    ]

    def branch(row_id: int, prefix: str, last: bool, root: bool) -> None:
        row = rows[row_id]
        head = "" if root else prefix + ("└─ " if last else "├─ ")
        via = "" if root else f"via {_link(row['link'])}: "
        lines.append(f"{head}#{row_id} {via}{_values(row)}  [{_provenance(row)}]")
        below = prefix if root else prefix + ("   " if last else "│  ")
        kids = children.get(row_id, [])
        for i, kid in enumerate(kids):
            branch(kid, below, i == len(kids) - 1, False)

    for root in children.get(None, []):
        branch(root, "", True, True)
    if document["blockedValues"]:
        lines.append("Blocked values held (they link nothing):")
        for blocked in document["blockedValues"]:
            where = ", ".join(f"#{i}" for i in blocked["contactIds"])
            block = f"block #{blocked['blockId']}, " if blocked["blockId"] is not None else ""
            lines.append(f"  {blocked['kind']} {blocked['value']} ({block}{blocked['reason']}) on {where}")
    lines.append("History (oldest first):" if document["history"] else "History: none")
    lines.extend(f"  {entry['at']}  {_history(entry)}" for entry in document["history"])
    if document["historyNext"]:
        lines.append(f"  … more: --history-after {document['historyNext']}")
    if (found := document["path"]) is not None:
        lines.append(f"Path #{found['from']} → #{found['to']}:")
        lines.extend(f"  #{s['from']} → #{s['to']} via {_link(s['link'])}" for s in found["steps"])
    return "\n".join(lines)


def erasure_text(document: dict[str, Any], dry_run: bool) -> str:
    request = "dry run, nothing changed" if dry_run else f"erasure request #{document['erasureRequestId']}"
    erased = ", ".join(f"#{i}" for i in document["erasedContactIds"]) or "none"
    lines = [f"{request}: rows erased: {erased}"]
    for view in document["identities"]:
        values = ", ".join([*view["emails"], *view["phoneNumbers"]])
        secondaries = "".join(f", #{i}" for i in view["secondaryContactIds"])
        lines.append(f"  identity #{view['primaryContactId']}{secondaries}: {values}")
    return "\n".join(lines)


def _values(row: dict[str, Any]) -> str:
    return " ".join(v for v in (row["email"], row["phoneNumber"]) if v is not None)


def _provenance(row: dict[str, Any]) -> str:
    return f"{row['linkPrecedence']}, created {row['createdAt']} by {row['source']} {row['sourceEventId']}"


def _link(link: dict[str, Any]) -> str:
    if link["kind"] == "merge":
        return f"merge of {link['email']} with {link['phoneNumber']}"
    return f"{link['kind']} {link['email'] if link['kind'] == 'email' else link['phoneNumber']}"


def _history(entry: dict[str, Any]) -> str:
    kind = entry["type"]
    if kind == "merge":
        bridge = " and ".join(v for v in (entry["email"], entry["phoneNumber"]) if v) or "(erased values)"
        return (
            f"merge #{entry['id']}: {_ids(entry['mergedPrimaryIds'])} joined #{entry['survivingPrimaryId']}"
            f" through {bridge} ({entry['source']} {entry['sourceEventId']})"
        )
    if kind == "split":
        cause = entry["cause"]
        return (
            f"split #{entry['id']}: #{entry['formerPrimaryId']} became {_ids(entry['primaryIds'])}"
            f" ({cause['type']} #{cause['id']})"
        )
    if kind == "erasure":
        return (
            f"erasure #{entry['id']}: an {entry['kind']} erased, rows {_ids(entry['erasedContactIds'])}"
            f" of {_ids(entry['formerPrimaryIds'])} (by {entry['requestedBy']})"
        )
    value = entry["value"] or "(a value this identity does not hold)"
    who = entry["addedBy"] if kind == "block" else entry["removedBy"]
    reason = f"{entry['reason']}, " if kind == "block" else ""
    return f"{kind} #{entry['id']}: {entry['kind']} {value} ({reason}by {who})"


def _ids(ids: list[int]) -> str:
    return ", ".join(f"#{i}" for i in ids) or "none"
