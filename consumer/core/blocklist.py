"""Blocked values (DESIGN.md rule 12): junk identifiers that must never link customers.

A value is blocked when the `blocked_value` table lists it (by keyed hash) or when it matches the
shipped junk patterns below. Blocked values are treated as absent by matching and merging.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from consumer import queries
from consumer.config import DEV_HASH_KEY, Settings
from consumer.core.links import Kind


@dataclass(frozen=True, slots=True)
class Guardrails:
    """The limits of rules 12-14 and the key of the blocklist's hashes."""

    max_links_per_value: int = 20
    max_identifiers_per_identity: int = 100
    junk_patterns: bool = True
    hash_key: bytes = DEV_HASH_KEY.encode()

    @classmethod
    def of(cls, settings: Settings) -> Guardrails:
        return cls(
            settings.max_links_per_value,
            settings.max_identifiers_per_identity,
            settings.blocklist_patterns,
            settings.identity_hash_key.get_secret_value().encode(),
        )


# Conservative on purpose (docs/guardrails.md): values no real customer has. Placeholder addresses
# (a placeholder local part at any domain, anything at test.com or at the reserved TLDs .test,
# .invalid and .localhost; not example.com, which synthetic loads use) and phones of one repeated
# digit (eight or more) or the ten digits in order. `123456` and `lorraine@hillvalley.edu` stay usable.
_JUNK_EMAIL = re.compile(
    r"(?:test|none|null|nil|noemail|no-email|nomail|no\.email|noreply|no-reply|donotreply|unknown|asdf|n/?a)@.*"
    r"|.*@(?:test\.com|localhost|.*\.(?:test|invalid|localhost))"
)
_JUNK_PHONE = re.compile(r"\+?(?:(\d)\1{7,}|0123456789|1234567890)")


def junk_value(kind: Kind, value: str) -> bool:
    """True when a normalized value matches the shipped junk patterns."""
    pattern = _JUNK_EMAIL if kind == "email" else _JUNK_PHONE
    return pattern.fullmatch(value) is not None


def value_hash(kind: Kind, value: str, key: bytes) -> bytes:
    """The keyed hash a block is matched by; it outlives the value's erasure (rule 17)."""
    return hmac.new(key, f"{kind}\x1f{value}".encode(), hashlib.sha256).digest()


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key; every process derives the same key from the same parts."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(slots=True)
class Blocklist:
    """What one transaction knows of the blocklist: looked up by hash, in bulk, when first needed."""

    conn: psycopg.Connection[Any]
    guard: Guardrails
    _known: dict[tuple[Kind, str], bool] = field(default_factory=dict)
    _pending: list[tuple[dict[bytes, tuple[Kind, str]], psycopg.Cursor[Any]]] = field(default_factory=list)

    def prefetch(self, values: Iterable[tuple[Kind, str]]) -> None:
        """Send the lookup of `values` now (it can share a round trip); read it back when needed."""
        key = self.guard.hash_key
        wanted = {value_hash(*v, key): v for v in values if v not in self._known and not self._junk(*v)}
        if wanted:
            self._pending.append((wanted, self.conn.execute(queries.BLOCKED_HASHES, [list(wanted)])))
            for v in wanted.values():
                self._known[v] = False

    def __call__(self, kind: Kind, value: str) -> bool:
        if self._pending:
            self._settle()
        if self._junk(kind, value):
            return True
        if (kind, value) not in self._known:
            self.prefetch([(kind, value)])
            self._settle()
        return self._known[kind, value]

    def add(
        self,
        kind: Kind,
        value: str,
        reason: str,
        added_by: str,
        identity_id: int | None,
        note: str | None = None,
    ) -> tuple[int, bool]:
        """Block `value`, taking first the advisory lock every writer of that value takes.

        Returns the block's id, and False when an active block of the value existed already.
        """
        self.conn.execute(queries.LOCK_KEYS, [f"[{lock_key(kind, value)}]"])
        digest = value_hash(kind, value, self.guard.hash_key)
        row = self.conn.execute(
            queries.INSERT_BLOCK, [kind, value, digest, reason, note, added_by, identity_id, digest]
        ).fetchone()
        assert row is not None
        self._known[kind, value] = True
        return int(row[0]), bool(row[1])

    def forget(self, kind: Kind, value: str) -> None:
        """The value's block was removed in this transaction (after any lookup still to be read)."""
        self._settle()
        self._known[kind, value] = False

    def _junk(self, kind: Kind, value: str) -> bool:
        return self.guard.junk_patterns and junk_value(kind, value)

    def _settle(self) -> None:
        for wanted, cursor in self._pending:
            for (digest,) in cursor.fetchall():
                self._known[wanted[bytes(digest)]] = True
        self._pending.clear()
