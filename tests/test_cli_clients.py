"""`identity clients create|list|rotate|revoke` and `identity audit`, run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from consumer.audit import Action, record_audit
from consumer.clients import KEY_PATTERN, Client, Scope, authenticate
from tests.support.keys import secret_of


def identity(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_create_prints_the_key_alone_and_stores_only_its_hash(database_url: str) -> None:
    name = unique("storefront")
    created = identity(database_url, "clients", "create", name, "--scopes", "identify,read", "--rate", "50")
    assert created.returncode == 0, created.stderr
    key = created.stdout.removesuffix("\n")
    assert KEY_PATTERN.fullmatch(key), created.stdout
    assert len(secret_of(key)) * 6 >= 256, "at least 256 random bits"

    with psycopg.connect(database_url) as conn:
        assert authenticate(conn, key) == Client(name, frozenset({Scope.IDENTIFY, Scope.READ}), 50.0, None)
        assert authenticate(conn, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
        dump = conn.execute("SELECT k::text, c::text FROM api_key k JOIN api_client c ON c.id = k.client_id")
        assert not [row for row in dump if key in "".join(row) or secret_of(key) in "".join(row)]

    listed = identity(database_url, "clients", "list")
    line = next(line for line in listed.stdout.splitlines() if line.startswith(name + "\t"))
    assert "identify,read" in line
    assert "50.0/s" in line
    assert key[4:16] in line
    assert "active" in line
    assert key not in listed.stdout


def test_names_are_unique_and_scopes_checked(database_url: str) -> None:
    name = unique("crm")
    assert identity(database_url, "clients", "create", name, "--scopes", "read").returncode == 0
    again = identity(database_url, "clients", "create", name, "--scopes", "read")
    assert (again.returncode, again.stdout) == (2, "")
    assert "exists already" in again.stderr
    wrong = identity(database_url, "clients", "create", unique("crm"), "--scopes", "read,superuser")
    assert wrong.returncode == 2
    assert "scopes are identify, read, admin" in wrong.stderr
    bad_name = identity(database_url, "clients", "create", "Has Spaces", "--scopes", "read")
    assert bad_name.returncode == 2
    assert "client name" in bad_name.stderr


def test_rotate_keeps_the_old_key_for_the_grace_period_and_revoke_ends_all(database_url: str) -> None:
    name = unique("loyalty")
    old = identity(database_url, "clients", "create", name, "--scopes", "read").stdout.strip()
    new = identity(database_url, "clients", "rotate", name, "--grace", "3600").stdout.strip()
    with psycopg.connect(database_url) as conn:
        assert authenticate(conn, old) is not None
        assert authenticate(conn, new) is not None
    newest = identity(database_url, "clients", "rotate", name, "--grace", "0").stdout.strip()
    with psycopg.connect(database_url) as conn:
        assert [authenticate(conn, k) is not None for k in (old, new, newest)] == [False, False, True]

    revoked = identity(database_url, "clients", "revoke", name)
    assert revoked.returncode == 0, revoked.stderr
    with psycopg.connect(database_url) as conn:
        assert authenticate(conn, newest) is None
    assert identity(database_url, "clients", "revoke", name).returncode == 2
    assert identity(database_url, "clients", "rotate", name).returncode == 2
    listed = identity(database_url, "clients", "list").stdout
    line = next(line for line in listed.splitlines() if line.startswith(name + "\t"))
    assert "\trevoked " in line


def test_audit_prints_entries_filtered_by_client_and_time(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    reader, admin = Client(unique("reader"), frozenset({Scope.READ})), Client(unique("ops"), frozenset(Scope))
    record_audit(db, reader, Action.CONTACT_READ, [7, 8])
    record_audit(db, admin, Action.BLOCK_ADD, [3])
    db.commit()

    listed = identity(database_url, "audit")
    assert listed.returncode == 0, listed.stderr
    everything = listed.stdout.splitlines()
    assert [line.split("\t")[1:] for line in everything] == [
        [reader.name, "contact.read", "7,8"],
        [admin.name, "blocked_value.add", "3"],
    ]
    assert datetime.fromisoformat(everything[0].split("\t")[0]) <= datetime.now(UTC)
    only_admin = identity(database_url, "audit", "--client", admin.name).stdout.splitlines()
    assert [line.split("\t")[1] for line in only_admin] == [admin.name]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert identity(database_url, "audit", "--since", tomorrow).stdout == ""
    assert identity(database_url, "audit", "--since", "yesterday").returncode == 2
