"""`identity explain` and `identity erase` output for people: the documents the API answers, as text."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


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
