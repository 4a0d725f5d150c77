"""Blocked values (DESIGN.md rule 12): junk identifiers that must never link customers.

A value is blocked when the `blocked_value` table lists it (by keyed hash) or when it matches the
shipped junk patterns below. Blocked values are treated as absent by matching and merging.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg

from consumer import queries
from consumer.config import DEV_HASH_KEY, Settings
from consumer.core.links import Kind

# Past this many entries the cache of blocked values starts afresh, as the API's key cache does.
CACHE_MAX_ENTRIES = 10_000


class BlockedCache:
    """The keyed hashes of values this process found blocked lately, each for `ttl_s` seconds after the
    lookup that found it (never the values themselves).

    A hint, never the truth: an input skips the locks of a value it holds, and its transaction reads the
    block again once it holds its row locks (`Transaction._lock`), so a stale entry costs a restart, not
    a wrong answer. Shared by a process's threads: each operation is one dict operation.
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._expiry: dict[bytes, float] = {}

    def __contains__(self, digest: bytes) -> bool:
        expiry = self._expiry.get(digest)
        return expiry is not None and self._clock() < expiry

    def add(self, digest: bytes) -> None:
        if len(self._expiry) >= CACHE_MAX_ENTRIES:
            self._expiry.clear()
        self._expiry[digest] = self._clock() + self._ttl_s

    def discard(self, digest: bytes) -> None:
        self._expiry.pop(digest, None)


@dataclass(frozen=True, slots=True)
class Guardrails:
    """The limits of rules 12-14, the key of the blocklist's hashes, and an API process's cache of
    blocked values (None elsewhere: the worker and the CLI look every block up)."""

    max_links_per_value: int = 20
    max_identifiers_per_identity: int = 100
    junk_patterns: bool = True
    hash_key: bytes = DEV_HASH_KEY.encode()
    blocked_cache: BlockedCache | None = None

    @classmethod
    def of(cls, settings: Settings, blocked_cache: BlockedCache | None = None) -> Guardrails:
        return cls(
            settings.max_links_per_value,
            settings.max_identifiers_per_identity,
            settings.blocklist_patterns,
            settings.identity_hash_key.get_secret_value().encode(),
            blocked_cache,
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
    """The keyed hash a block is matched by (HMAC-SHA256); it outlives the value's erasure (rule 17)."""
    # A copy of the keyed HMAC skips the OpenSSL key setup a one-shot `hmac.digest` pays per value (1.3
    # against 1.6 µs): an input's values are hashed in every transaction that sees them.
    mac = _keyed_hmac(key).copy()
    mac.update(f"{kind}\x1f{value}".encode())
    return mac.digest()


@functools.lru_cache(maxsize=4)
def _keyed_hmac(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod="sha256")


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
    _digests: dict[tuple[Kind, str], bytes] = field(default_factory=dict)
    _pending: list[tuple[dict[bytes, tuple[Kind, str]], psycopg.Cursor[Any]]] = field(default_factory=list)
    _junk_values: dict[tuple[Kind, str], bool] = field(default_factory=dict)

    def prefetch(self, values: Iterable[tuple[Kind, str]], *, again: bool = False) -> None:
        """Send the lookup of `values` now (it can share a round trip); read it back when needed. With
        `again`, values looked up before are looked up anew: the lookup sent last decides."""
        wanted = {
            self._digest(*v): v for v in values if (again or v not in self._known) and not self._junk(*v)
        }
        if wanted:
            hashes = orjson.dumps([digest.hex() for digest in wanted]).decode()
            self._pending.append((wanted, self.conn.execute(queries.BLOCKED_HASHES, [hashes])))
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

    def known_blocked(self, kind: Kind, value: str) -> bool:
        """Blocked as far as this process knows without asking the database: a junk value, or one in the
        cache. The cache's word is a hint only: look the value up `again` before relying on it."""
        cache = self.guard.blocked_cache
        return self._junk(kind, value) or (cache is not None and self._digest(kind, value) in cache)

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
        digest = self._digest(kind, value)
        row = self.conn.execute(
            queries.INSERT_BLOCK, [kind, value, digest, reason, note, added_by, identity_id, digest]
        ).fetchone()
        assert row is not None
        self._settle()  # a lookup still to be read must not undo this
        self._known[kind, value] = True
        return int(row[0]), bool(row[1])

    def forget(self, kind: Kind, value: str) -> None:
        """The value's block was removed in this transaction (after any lookup still to be read)."""
        self._settle()
        self._known[kind, value] = False
        if self.guard.blocked_cache is not None:
            self.guard.blocked_cache.discard(self._digest(kind, value))

    def _digest(self, kind: Kind, value: str) -> bytes:
        """The value's keyed hash, computed once per transaction (an input's values are asked for twice)."""
        digest = self._digests.get((kind, value))
        if digest is None:
            digest = self._digests[kind, value] = value_hash(kind, value, self.guard.hash_key)
        return digest

    def _junk(self, kind: Kind, value: str) -> bool:
        """Matched once per transaction: an input's values are asked about several times."""
        if not self.guard.junk_patterns:
            return False
        junk = self._junk_values.get((kind, value))
        if junk is None:
            junk = self._junk_values[kind, value] = junk_value(kind, value)
        return junk

    def _settle(self) -> None:
        cache = self.guard.blocked_cache
        for wanted, cursor in self._pending:
            found = {bytes(digest) for (digest,) in cursor.fetchall()}
            for digest, value in wanted.items():
                self._known[value] = digest in found
                if cache is not None:  # found: remembered for the next inputs; not found: a stale entry goes
                    (cache.add if digest in found else cache.discard)(digest)
        self._pending.clear()
