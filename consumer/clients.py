"""API clients and their keys (DESIGN.md rule 19), for the API and the CLI alike; no HTTP code here.

A key reads `idk_<key id>_<secret>`: the key id (48 random bits, not secret) finds the row, the secret
(256 random bits) proves possession. Only the SHA-256 of the whole key is stored, and the comparison
is constant-time. A fast hash is enough: a 256-bit random secret cannot be guessed, so there is nothing
a slow password hash would protect.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import psycopg

from consumer import queries

KEY_PATTERN = re.compile(r"idk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


class Scope(StrEnum):
    IDENTIFY = "identify"  # POST /identify
    READ = "read"  # GET /contacts/…
    ADMIN = "admin"  # blocked values, erasure


@dataclass(frozen=True, slots=True)
class Client:
    """Who is calling: a named client and what it may do. Its rate limit, or None for the defaults."""

    name: str
    scopes: frozenset[Scope]
    rate_per_s: float | None = None
    burst: int | None = None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the database holds about one key: enough to verify it, but not the key itself."""

    key_hash: bytes
    expires_at: datetime | None
    revoked: bool
    client: Client

    def verify(self, key: str) -> Client | None:
        """The client, if `key` is this record's key and still valid."""
        matches = hmac.compare_digest(hash_key(key), self.key_hash)
        expired = self.expires_at is not None and self.expires_at <= datetime.now(UTC)
        return self.client if matches and not expired and not self.revoked else None


@dataclass(frozen=True, slots=True)
class ClientInfo:
    client: Client
    created_at: datetime
    revoked_at: datetime | None
    key_ids: list[str]


class ClientError(ValueError):
    pass


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id(key: str) -> str | None:
    """The public part of a well-formed key, or None for anything else."""
    match = KEY_PATTERN.fullmatch(key)
    return match[1] if match else None


def parse_scopes(text: str | Iterable[str]) -> frozenset[Scope]:
    names = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    try:
        scopes = frozenset(Scope(name) for name in names if name)
    except ValueError:
        raise ClientError(f"scopes are {', '.join(Scope)}") from None
    if not scopes:
        raise ClientError("give at least one scope")
    return scopes


def create_client(
    conn: psycopg.Connection[Any],
    name: str,
    scopes: Iterable[Scope],
    *,
    rate_per_s: float | None = None,
    burst: int | None = None,
) -> str:
    """Create a client and its first key; returns the key, which is stored nowhere else."""
    if not NAME_PATTERN.fullmatch(name):
        raise ClientError("a client name is 1-63 characters: a-z, 0-9, '.', '_', '-', starting alphanumeric")
    with conn.transaction():
        row = conn.execute(queries.INSERT_CLIENT, [name, sorted(scopes), rate_per_s, burst]).fetchone()
        if row is None:
            raise ClientError(f"a client named {name!r} exists already (names are never reused)")
        return _new_key(conn, row[0])


def rotate_key(conn: psycopg.Connection[Any], name: str, *, grace_s: float) -> str:
    """A new key for the client; its current keys keep working for `grace_s` seconds, then expire."""
    with conn.transaction():
        row = conn.execute(queries.ACTIVE_CLIENT_ID, [name]).fetchone()
        if row is None:
            raise ClientError(f"no active client named {name!r}")
        conn.execute(queries.EXPIRE_KEYS, [grace_s, row[0]])
        return _new_key(conn, row[0])


def revoke_client(conn: psycopg.Connection[Any], name: str) -> bool:
    """Revoke every key of the client at once; False if there is no active client of that name."""
    with conn.transaction():
        return conn.execute(queries.REVOKE_CLIENT, [name]).rowcount == 1


def list_clients(conn: psycopg.Connection[Any]) -> list[ClientInfo]:
    return [
        ClientInfo(Client(name, parse_scopes(scopes), rate, burst), created, revoked, key_ids)
        for name, scopes, rate, burst, created, revoked, key_ids in conn.execute(queries.LIST_CLIENTS)
    ]


def find_key(conn: psycopg.Connection[Any], key_id: str) -> KeyRecord | None:
    row = conn.execute(queries.FIND_KEY, [key_id]).fetchone()
    if row is None:
        return None
    key_hash, expires_at, name, scopes, rate, burst, revoked = row
    return KeyRecord(bytes(key_hash), expires_at, revoked, Client(name, parse_scopes(scopes), rate, burst))


def authenticate(conn: psycopg.Connection[Any], key: str) -> Client | None:
    """The client owning this valid key, or None (malformed, unknown, expired or revoked). No cache:
    the API's `Authenticator` caches these lookups."""
    public = key_id(key)
    record = find_key(conn, public) if public else None
    return record.verify(key) if record else None


def _new_key(conn: psycopg.Connection[Any], client_id: int) -> str:
    public = secrets.token_hex(6)
    key = f"idk_{public}_{secrets.token_urlsafe(32)}"
    conn.execute(queries.INSERT_KEY, [public, client_id, hash_key(key)])
    return key
