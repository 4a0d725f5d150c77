"""Finding an identity by one identifier, without creating anything (the console's search)."""

from __future__ import annotations

from typing import Any, Literal

import psycopg

from consumer import queries

LookupKind = Literal["email", "phone", "contact"]
_QUERIES = {
    "email": queries.PRIMARY_OF_EMAIL,
    "phone": queries.PRIMARY_OF_PHONE,
    "contact": queries.PRIMARY_OF_CONTACT,
}


def primary_of(conn: psycopg.Connection[Any], kind: LookupKind, value: str | int) -> int | None:
    """The primary contact id of the live identity holding `value` (normalized already), or None."""
    row = conn.execute(_QUERIES[kind], [value]).fetchone()
    return None if row is None else int(row[0])
