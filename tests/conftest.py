from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from consumer.migrate import migrate
from tests import services

TABLES = "contact, processed_event, merge_log, outbox, blocked_value, split_log"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with services.postgres(tmp_path_factory.mktemp("postgres")) as url:
        migrate(url)
        yield url


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with services.kafka(tmp_path_factory.mktemp("kafka")) as servers:
        yield servers


def reset_database(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    conn.commit()


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to an empty, migrated database."""
    with psycopg.connect(database_url) as conn:
        reset_database(conn)
        yield conn
