"""Worker, relay and API each run as their own runtime role with only the grants docs/security.md lists
(`identity check` as the worker's); migrations and operator commands run as a non-superuser owner. The
grants are read from that document, so the document and this test cannot drift apart."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support import ROOT
from tests.support.database import processed, unpublished
from tests.support.kafka import OutputReader, envelope, produce, structured
from tests.support.keys import new_key
from tests.support.polling import wait_until
from tests.support.processes import api_server
from tests.support.services import fresh_database
from tests.support.stack import Stack
from tests.support.topics import Topics

DOC = ROOT / "docs" / "security.md"


ROLES = ("owner", "worker", "relay", "api")


def documented_grants(roles: dict[str, str]) -> str:
    """The SQL block of docs/security.md that starts with `-- runtime role grants`, for these roles."""
    block: str
    (block,) = re.findall(r"```sql\n(-- runtime role grants\n.*?)```", DOC.read_text(), re.S)
    for role, name in roles.items():
        block = re.sub(rf"\bidentity_{role}\b", name, block)
    return block


@pytest.fixture
def roles(database_url: str) -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    names = {role: f"identity_{role}_{tag}" for role in ROLES}
    with psycopg.connect(database_url, autocommit=True) as admin:
        for name in names.values():
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                    sql.Identifier(name)
                )
            )
    yield names
    with psycopg.connect(database_url, autocommit=True) as admin:
        for name in names.values():
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def identity(command: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", command],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_services_run_as_runtime_roles_without_superuser_rights(
    database_url: str, kafka_bootstrap: str, tmp_path: Path, roles: dict[str, str]
) -> None:
    with fresh_database(database_url) as url:
        dbname = conninfo_to_dict(url)["dbname"]
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(str(dbname)), sql.Identifier(roles["owner"])
                )
            )
        urls = {role: make_conninfo(url, user=name) for role, name in roles.items()}

        migrated = identity("migrate", urls["owner"])
        assert migrated.returncode == 0, migrated.stderr
        with psycopg.connect(urls["owner"], autocommit=True) as conn:
            conn.execute(documented_grants(roles).encode())
        key = new_key(urls["owner"], rate_per_s=100, burst=100)

        stack = Stack(urls["owner"], kafka_bootstrap, Topics.create(kafka_bootstrap, 2), tmp_path)
        reader = OutputReader(kafka_bootstrap, stack.topics.outputs)
        try:
            with api_server(urls["api"], tmp_path, key=key) as api:
                stack.start("worker", DATABASE_URL=urls["worker"])
                stack.start(
                    "relay",
                    DATABASE_URL=urls["relay"],
                    OUTBOX_RETENTION_HOURS="0",
                    RELAY_PRUNE_INTERVAL_S="0.5",
                )
                events = [
                    envelope("lp-1", "marty@hillvalley.edu", "5550100"),
                    envelope("lp-2", "emmett@hillvalley.edu", "5550101"),
                    envelope("lp-3", "marty@hillvalley.edu", "5550101"),  # a merge
                ]
                produce(kafka_bootstrap, stack.topics.checkout, [structured(e) for e in events])
                assert httpx.get(api.url + "/readyz", timeout=10).status_code == 200
                answer = httpx.post(
                    api.url + "/identify",
                    json={"email": "doc@hillvalley.edu"},
                    headers=api.headers,
                    timeout=10,
                )
                assert answer.status_code == 200, answer.text
                contact = answer.json()["contact"]["primaryContactId"]
                read = httpx.get(f"{api.url}/contacts/{contact}", headers=api.headers, timeout=10)
                assert read.status_code == 200, read.text
                wait_until(
                    lambda: processed(urls["owner"]) == len(events), 60, "the events, as the worker's role"
                )
                wait_until(lambda: unpublished(urls["owner"]) == 0, 60, "the outbox published")
                # 3 resolved, 1 merged, 1 for the API call; the relay also pruned them (DELETE).
                reader.read_until(lambda m: len({x.id for x in m}) >= 5)
                wait_until(
                    lambda: any(s.logged("outbox pruned") for s in stack.services), 30, "the relay to prune"
                )
            for service in stack.services:
                assert service.process.poll() is None, f"{service.log_path.name} failed as its role"
        finally:
            reader.close()
            stack.close()

        with psycopg.connect(urls["owner"]) as conn:
            assert conn.execute("SELECT action FROM audit_log").fetchall() == [("contact.read",)]
            assert conn.execute("SELECT count(*) FROM rate_bucket").fetchone() == (1,)
        check = identity("check", urls["worker"])
        assert check.returncode == 0, check.stdout + check.stderr
        refused = {
            "CREATE TABLE intruder (id int)",
            "TRUNCATE contact",
            "DROP TABLE outbox",
        }
        refused_to = {
            "worker": refused | {"DELETE FROM contact", "SELECT * FROM api_key"},
            "relay": refused | {"SELECT * FROM contact", "INSERT INTO outbox (payloads) VALUES ('x')"},
            "api": refused
            | {"SELECT * FROM audit_log", "INSERT INTO api_client (name, scopes) VALUES ('x', '{}')"},
        }
        for role, statements in refused_to.items():
            with psycopg.connect(urls[role], autocommit=True) as conn:
                row = conn.execute(
                    "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
                ).fetchone()
                assert row == (False, False, False)
                for statement in statements:
                    with pytest.raises(errors.InsufficientPrivilege):
                        conn.execute(statement.encode())
