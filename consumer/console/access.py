"""Who is signed in to the console, and what they may do: the API's own clients and scopes (rule 19)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

READ = "read"
ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    scopes: frozenset[str]

    @property
    def can_read(self) -> bool:
        return READ in self.scopes

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.scopes


def authenticate(conn: psycopg.Connection[Any], api_key: str) -> Operator | None:
    """The client owning `api_key`, or None for an unknown or revoked key; checked on every request, so
    revoking a key signs its console sessions out at once.

    Pending consumer/api/auth.py (rule 19): until API keys exist every non-empty key is a local operator
    with every scope, exactly as open as the API itself is today.
    """
    del conn
    return Operator("local", frozenset({READ, ADMIN})) if api_key else None
