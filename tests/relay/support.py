"""Helpers shared by the relay and end-to-end tests: service processes, output consumers, bounded waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import orjson
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from confluent_kafka._types import HeadersType

from consumer.core import Request, reconcile_batch
from consumer.embedded import create_topics
from consumer.normalize import Normalizer

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 3
SOURCE = "urn:test:checkout"


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Topics:
    resolved: str
    merged: str
    split: str
    erased: str

    @classmethod
    def create(cls, bootstrap: str, prefix: str = "relay") -> Topics:
        tag = uuid.uuid4().hex[:8]
        topics = cls(
            *(f"{prefix}-{tag}.identity.{kind}" for kind in ("resolved", "merged", "split", "erased"))
        )
        create_topics(bootstrap, dict.fromkeys(topics.all(), PARTITIONS))
        return topics

    def all(self) -> list[str]:
        return [self.resolved, self.merged, self.split, self.erased]

    def env(self) -> dict[str, str]:
        return {
            "RESOLVED_TOPIC": self.resolved,
            "MERGED_TOPIC": self.merged,
            "SPLIT_TOPIC": self.split,
            "ERASED_TOPIC": self.erased,
        }


class Service:
    """`python -m consumer COMMAND` as a real process, its JSON logs in a file."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "consumer", command],
                env={**os.environ, **env},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_bytes().splitlines()
        return [orjson.loads(line) for line in lines if line.startswith(b"{")]

    def logged(self, event: str) -> bool:
        return any(entry.get("event") == event for entry in self.logs())

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit status (SIGKILL if it does not exit in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


@dataclass(frozen=True)
class Output:
    topic: str
    partition: int
    key: str | None
    value: dict[str, Any]
    headers: dict[str, bytes]

    @property
    def id(self) -> str:
        return str(self.value["id"])


class OutputReader:
    """Reads the output topics from the beginning, by partition assignment (no group join to wait for)."""

    def __init__(self, bootstrap: str, topics: Iterable[str], partitions: int = PARTITIONS) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"test-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        self.consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(partitions)]
        )
        self.messages: list[Output] = []

    def read_until(self, condition: Callable[[list[Output]], bool], timeout: float = 30.0) -> list[Output]:
        def more() -> bool:
            for message in self.consumer.consume(1000, 0.2):
                assert message.error() is None, message.error()
                self.messages.append(_output(message))
            return condition(self.messages)

        wait_until(more, timeout, "output events")
        return self.messages

    def close(self) -> None:
        self.consumer.close()


def _output(message: Message) -> Output:
    topic, partition, key, value = message.topic(), message.partition(), message.key(), message.value()
    assert topic is not None and partition is not None and value is not None
    return Output(
        topic,
        partition,
        key.decode() if isinstance(key, bytes) else key,
        orjson.loads(value),
        {k: v for k, v in _pairs(message.headers()) if isinstance(v, bytes)},
    )


def _pairs(headers: HeadersType | None) -> Iterable[tuple[str, str | bytes | None]]:
    return headers.items() if isinstance(headers, dict) else headers or []


def reconcile_events(
    conn: psycopg.Connection[Any], events: Iterable[tuple[str, object, object]], batch: int = 100
) -> None:
    """Apply (event id, email, phone) through the core, `batch` events per transaction."""
    normalizer = Normalizer()
    requests = [Request(normalizer.identifiers(email, phone), SOURCE, eid) for eid, email, phone in events]
    for start in range(0, len(requests), batch):
        reconcile_batch(conn, requests[start : start + batch])


def synthetic_events(count: int, first: int = 0) -> Iterator[tuple[str, object, object]]:
    """A deterministic mix: new buyers, a second phone, repeats, and bridges merging pairs of buyers.

    Events `first .. first + count - 1`; ranges starting at multiples of 6 share no buyer.
    """
    for i in range(first, first + count):
        buyer, step = divmod(i, 3)
        email, phone = f"buyer{buyer}@example.com", f"+1555{buyer:07d}"
        if step == 0:
            yield f"e{i}", email, phone
        elif step == 1:
            yield f"e{i}", email, f"+1666{buyer:07d}"
        elif buyer % 2:
            # The previous buyer's email with this buyer's phone: their two clusters merge.
            yield f"e{i}", f"buyer{buyer - 1}@example.com", phone
        else:
            yield f"e{i}", email, None


def outbox_rows(conn: psycopg.Connection[Any]) -> list[tuple[int, str, str, dict[str, Any], bool]]:
    """(id, event_type, message_key, payload, published) for every outbox row, by id."""
    rows = conn.execute(
        "SELECT id, event_type, message_key, payload, published_at IS NOT NULL FROM outbox ORDER BY id"
    ).fetchall()
    conn.commit()
    return rows


def unpublished(conn: psycopg.Connection[Any]) -> int:
    return _count(conn, "SELECT count(*) FROM outbox WHERE published_at IS NULL")


def published(conn: psycopg.Connection[Any]) -> int:
    return _count(conn, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")


def _count(conn: psycopg.Connection[Any], statement: LiteralString) -> int:
    row = conn.execute(statement).fetchone()
    conn.commit()
    assert row is not None
    return int(row[0])
