"""API keys for the tests: clients with unique names, and the header that carries a key."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import psycopg

from consumer.clients import KEY_PATTERN, Scope, create_client

# Well-formed, but no database holds it: for servers whose database cannot create a client.
UNKNOWN_KEY = "idk_000000000000_" + "A" * 43
UNLIMITED = 1_000_000


def new_key(
    database_url: str,
    scopes: Iterable[Scope] = Scope,
    *,
    rate_per_s: float = UNLIMITED,
    burst: int = UNLIMITED,
) -> str:
    """The key of a new client with a unique name (every scope, and a rate limit no test reaches,
    unless told otherwise)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return create_client(
            conn, f"test-{uuid.uuid4().hex[:12]}", scopes, rate_per_s=rate_per_s, burst=burst
        )


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def secret_of(key: str) -> str:
    """The secret part of a key (after `idk_<key id>_`); it may itself hold '_'."""
    match = KEY_PATTERN.fullmatch(key)
    assert match is not None
    return match[2]
