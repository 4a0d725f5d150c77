"""`identity migrate`: each numbered file applied once, in order, even with many migrators at once."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumer.migrate import SQL_DIR, MigrationError, available, migrate, pending
from tests.support.services import fresh_database

CORE_TABLES = {"contact", "processed_event", "merge_log", "outbox", "schema_migration"}
# 002 creates a table and 003 counts its own runs in it, so a second application shows as a second row.
PROBE_FILES = {
    "002_probe.sql": "CREATE TABLE migration_probe (version text NOT NULL);",
    "003_probe_row.sql": "INSERT INTO migration_probe VALUES ('003');",
}


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        yield url


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    """A migrations directory: the real 001 followed by two probe files."""
    shutil.copy(SQL_DIR / "001_contact.sql", tmp_path)
    for name, text in PROBE_FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "README.sql").write_text("this is not a migration and would not parse")
    return tmp_path


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def applied(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(v, c) for v, c in conn.execute("SELECT version, checksum FROM schema_migration ORDER BY 1")]


def probe_rows(url: str) -> list[Any]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM migration_probe")]


def test_applies_every_file_on_an_empty_database(empty_database: str) -> None:
    versions = [m.version for m in available()]
    assert versions[0] == "001_contact"
    assert versions == sorted(versions)
    with psycopg.connect(empty_database) as conn:
        assert [m.version for m in pending(conn)] == versions

    assert migrate(empty_database) == versions

    assert tables(empty_database) >= CORE_TABLES
    expected = [(m.version, hashlib.sha256(m.path.read_bytes()).hexdigest()) for m in available()]
    assert applied(empty_database) == expected
    with psycopg.connect(empty_database) as conn:
        assert pending(conn) == []


def test_second_run_is_a_no_op(empty_database: str, migrations: Path) -> None:
    assert migrate(empty_database, migrations) == ["001_contact", "002_probe", "003_probe_row"]
    with psycopg.connect(empty_database) as conn:
        before = conn.execute("SELECT * FROM schema_migration ORDER BY version").fetchall()

    assert migrate(empty_database, migrations) == []

    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT * FROM schema_migration ORDER BY version").fetchall() == before
    assert probe_rows(empty_database) == ["003"]


def test_new_files_are_applied_after_the_old_ones(empty_database: str, migrations: Path) -> None:
    (migrations / "003_probe_row.sql").rename(migrations / "003_later.sql.off")
    assert migrate(empty_database, migrations) == ["001_contact", "002_probe"]
    (migrations / "003_later.sql.off").rename(migrations / "003_probe_row.sql")
    assert migrate(empty_database, migrations) == ["003_probe_row"]
    assert probe_rows(empty_database) == ["003"]


def test_concurrent_threads_apply_each_file_exactly_once(empty_database: str, migrations: Path) -> None:
    threads = 8
    start = threading.Barrier(threads)
    results: list[list[str]] = []
    failures: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            results.append(migrate(empty_database, migrations))
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert failures == []
    assert len(results) == threads
    assert sorted(v for result in results for v in result) == ["001_contact", "002_probe", "003_probe_row"]
    assert [len(applied(empty_database)), probe_rows(empty_database)] == [3, ["003"]]


def test_concurrent_processes_apply_each_file_exactly_once(empty_database: str, migrations: Path) -> None:
    env = {**os.environ, "DATABASE_URL": empty_database, "MIGRATIONS_DIR": str(migrations)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "consumer", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]

    assert [process.returncode for process in processes] == [0] * 4, outputs
    # Each prints "applied N migration(s)"; together they applied the three files once.
    assert sum(int(out.split()[1]) for out, _ in outputs) == 3
    assert [len(applied(empty_database)), probe_rows(empty_database)] == [3, ["003"]]


def test_a_changed_applied_file_is_an_error(empty_database: str, migrations: Path) -> None:
    migrate(empty_database, migrations)
    probe = migrations / "002_probe.sql"
    original = probe.read_text()
    probe.write_text(original + "\n-- an innocent-looking edit\n")

    with pytest.raises(MigrationError, match="002_probe"):
        migrate(empty_database, migrations)
    assert probe_rows(empty_database) == ["003"]

    # The failed run released its lock: the next run gets it and finds nothing to do.
    probe.write_text(original)
    assert migrate(empty_database, migrations) == []


def test_a_failing_file_is_rolled_back_and_not_recorded(empty_database: str, migrations: Path) -> None:
    broken = migrations / "002_probe.sql"
    broken.write_text("CREATE TABLE migration_probe (version text); SELECT no_such_function();")

    with pytest.raises(psycopg.errors.UndefinedFunction):
        migrate(empty_database, migrations)
    assert [v for v, _ in applied(empty_database)] == ["001_contact"]
    assert "migration_probe" not in tables(empty_database)

    broken.write_text(PROBE_FILES["002_probe.sql"])
    assert migrate(empty_database, migrations) == ["002_probe", "003_probe_row"]


def test_007_keeps_a_secondaries_index_an_operator_built_beforehand(
    empty_database: str, tmp_path: Path
) -> None:
    for migration in available():
        if migration.version < "007":
            shutil.copy(migration.path, tmp_path)
    migrate(empty_database, tmp_path)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(
            "CREATE INDEX CONCURRENTLY contact_secondaries_idx ON contact (linked_id)"
            " WHERE deleted_at IS NULL AND linked_id IS NOT NULL"
        )

    assert "007_identity_lookups" in migrate(empty_database)

    with psycopg.connect(empty_database) as conn:
        indexes = {
            row[0] for row in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'contact'")
        }
    assert "contact_secondaries_idx" in indexes
    assert "contact_linked_idx" not in indexes


def test_008_keeps_every_outbox_event_one_row_each_in_order(empty_database: str, tmp_path: Path) -> None:
    for migration in available():
        if migration.version < "008":
            shutil.copy(migration.path, tmp_path)
    migrate(empty_database, tmp_path)
    # As 003 left them: json payloads, spelled by whoever wrote them (a line break included).
    events = [
        ("identity.resolved", "7", '{"id": "a",\n "type": "identity.resolved"}', True),
        ("identity.merged", "7", '{"id": "b", "type": "identity.merged"}', False),
        ("identity.resolved", "9", '{"id": "c", "type": "identity.resolved"}', False),
    ]
    with psycopg.connect(empty_database) as conn:
        for event_type, key, payload, published in events:
            conn.execute(
                "INSERT INTO outbox (event_type, message_key, payload, published_at)"
                " VALUES (%s, %s, %s, CASE WHEN %s THEN now() END)",
                [event_type, key, payload, published],
            )

    assert migrate(empty_database) == [m.version for m in available() if m.version >= "008"]

    with psycopg.connect(empty_database) as conn:
        rows = conn.execute(
            "SELECT event_types, message_keys, payloads, published_at IS NOT NULL FROM outbox ORDER BY id"
        ).fetchall()
        seen = conn.execute(
            "SELECT event_type, message_key, payload->>'id' FROM outbox_event ORDER BY outbox_id, position"
        ).fetchall()
    assert [(types, keys, published) for types, keys, _, published in rows] == [
        ([t], [k], p) for t, k, _, p in events
    ]
    assert all("\n" not in payloads for *_, payloads, _ in rows)
    assert seen == [
        ("identity.resolved", "7", "a"),
        ("identity.merged", "7", "b"),
        ("identity.resolved", "9", "c"),
    ]


def test_009_compresses_outbox_payloads_with_lz4_where_the_server_has_it(empty_database: str) -> None:
    migrate(empty_database)

    with psycopg.connect(empty_database) as conn:
        try:
            with conn.transaction():
                conn.execute("CREATE TEMPORARY TABLE lz4_probe (t text COMPRESSION lz4)")
            has_lz4 = True
        except psycopg.errors.FeatureNotSupported:
            has_lz4 = False
        method = conn.execute(
            "SELECT attcompression FROM pg_attribute"
            " WHERE attrelid = 'outbox'::regclass AND attname = 'payloads'"
        ).fetchone()
    # '' is the server's default (pglz).
    assert method == ("l" if has_lz4 else "",)
