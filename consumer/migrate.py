"""`identity migrate`: apply the numbered, forward-only files in `sql/` in order, once each.

Several processes may run it at once: a session advisory lock makes the others wait, then find
nothing left to do. A file already applied whose content changed is an error, not a silent skip.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import structlog

from consumer import queries
from consumer.config import get_settings

log = structlog.get_logger(__name__)

# The checkout's migrations; MIGRATIONS_DIR points elsewhere (an installed package has no sql/).
SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


def migrations_dir() -> Path:
    configured = get_settings().migrations_dir
    return Path(configured) if configured else SQL_DIR


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


class MigrationError(RuntimeError):
    pass


def available(directory: Path | None = None) -> list[Migration]:
    """The migration files of `directory` (default: MIGRATIONS_DIR), in order."""
    return [Migration(p.stem, p) for p in sorted((directory or migrations_dir()).glob("[0-9]*.sql"))]


def pending(conn: psycopg.Connection[Any], directory: Path | None = None) -> list[Migration]:
    """Migrations not applied yet (all of them on an empty database)."""
    applied = _applied(conn)
    return [m for m in available(directory) if m.version not in applied]


def migrate(database_url: str, directory: Path | None = None) -> list[str]:
    """Apply every pending migration; returns the versions applied by this call."""
    done: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(queries.MIGRATION_LOCK)
        try:
            conn.execute(queries.CREATE_MIGRATION_TABLE)
            applied = _applied(conn)
            for migration in available(directory):
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        raise MigrationError(f"migration {migration.version} changed after it was applied")
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(queries.RECORD_MIGRATION, [migration.version, migration.checksum])
                log.info("migration applied", version=migration.version)
                done.append(migration.version)
        finally:
            conn.execute(queries.MIGRATION_UNLOCK)
    return done


def _applied(conn: psycopg.Connection[Any]) -> dict[str, str]:
    exists = conn.execute(queries.MIGRATION_TABLE_EXISTS).fetchone()
    if not exists or not exists[0]:
        return {}
    return {version: checksum for version, checksum in conn.execute(queries.APPLIED_MIGRATIONS)}
