"""Helpers for the worker tests: events, a real worker subprocess, topics and database probes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "urn:test:checkout"

Headers = list[tuple[str, bytes]]
STRUCTURED = [("content-type", b"application/cloudevents+json")]


@dataclass(frozen=True)
class Record:
    value: bytes | None
    key: bytes | None = None
    headers: Headers = field(default_factory=list)


def envelope(
    event_id: str,
    email: object = None,
    phone: object = None,
    *,
    time: datetime | None = None,
    order_id: object = None,
    source: str = SOURCE,
) -> dict[str, Any]:
    data: dict[str, Any] = {"email": email, "phoneNumber": phone}
    if order_id is not None:
        data["orderId"] = order_id
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": "checkout.completed",
        "datacontenttype": "application/json",
        "data": data,
    }
    if time is not None:
        event["time"] = time.isoformat()
    return event


def structured(event: dict[str, Any], key: str | None = None) -> Record:
    data = event.get("data") or {}
    key = key or data.get("email") or (None if data.get("phoneNumber") is None else str(data["phoneNumber"]))
    return Record(json.dumps(event).encode(), key.encode() if key else None, list(STRUCTURED))


def binary(event: dict[str, Any], key: str | None = None) -> Record:
    headers = [(f"ce_{k}", str(v).encode()) for k, v in event.items() if k not in ("data", "datacontenttype")]
    headers.append(("content-type", b"application/json"))
    return Record(json.dumps(event["data"]).encode(), key.encode() if key else None, headers)


def produce(
    bootstrap: str, topic: str, records: Sequence[Record], *, timeout: float = 30, **config: object
) -> None:
    """Produce in order and wait (up to `timeout` s) until every record is acknowledged."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, **config}
    )
    failures: list[KafkaError] = []

    def report(error: KafkaError | None, _: Message) -> None:
        if error is not None:
            failures.append(error)

    for r in records:
        headers: list[tuple[str, str | bytes | None]] = list(r.headers)
        producer.produce(topic, r.value, r.key, headers=headers, on_delivery=report)
        producer.poll(0)
    assert producer.flush(timeout) == 0, f"records still queued after {timeout} s"
    assert not failures, failures


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list[Message]:
    """The first `count` records of `topic` (all partitions), waiting for them up to `timeout`."""
    # assign(), not subscribe(): a group join would cost seconds on Tansu.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            messages.extend(m for m in consumer.consume(count - len(messages), 0.5) if m.error() is None)
    finally:
        consumer.close()
    assert len(messages) == count, f"read {len(messages)} of {count} records from {topic}"
    return messages


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def count(database_url: str, query: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query.encode()).fetchone()
        assert row is not None
        return int(row[0])


def processed(database_url: str) -> int:
    return count(database_url, "SELECT count(*) FROM processed_event")


class WorkerProcess:
    """`python -m consumer worker` in its own process, logging JSON lines to a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "worker"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> list[dict[str, Any]]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def logged(self, event: str) -> bool:
        return any(entry.get("event") == event for entry in self.logs())

    def owned(self) -> set[str]:
        """The partitions the worker owns now, from its log."""
        partitions: set[str] = set()
        for entry in self.logs():
            if entry.get("event") == "partitions assigned":
                partitions |= set(entry["partitions"])
            elif entry.get("event") in ("partitions revoked", "partitions lost"):
                partitions -= set(entry["partitions"])
        return partitions

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.wait(10)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._out.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._out.close()


_ID_FIELDS = frozenset(
    {
        "contactId",
        "primaryContatctId",
        "primaryContactId",
        "secondaryContactIds",
        "survivingPrimaryId",
        "mergedPrimaryIds",
        "relinkedContactIds",
    }
)


def snapshot(database_url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Contacts and outbox events with every contact id replaced by the event that created that row.

    Ids come from a sequence in blocks, so they depend on how events were batched; provenance does not.
    """
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, email, phone_number, linked_id, link_precedence, created_at, source_event_id"
            " FROM contact ORDER BY created_at, id"
        ).fetchall()
        events = conn.execute("SELECT event_type, message_key, payload FROM outbox ORDER BY id").fetchall()
    by_id = {row[0]: row[6] for row in rows}
    contacts = [
        (event, email, phone, by_id.get(linked), precedence, created)
        for _, email, phone, linked, precedence, created, event in rows
    ]

    def canonical(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: canonical(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [canonical(v, key) for v in value]
        if key in _ID_FIELDS and isinstance(value, int):
            return by_id[value]
        return value

    outbox = [(kind, by_id[int(key)], canonical(payload["data"])) for kind, key, payload in events]
    return contacts, outbox


def components(pairs: Sequence[tuple[str | None, str | None]]) -> set[frozenset[str]]:
    """Connected components of emails and phones that appeared together (union-find)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for email, phone in pairs:
        nodes = [n for n in (f"e:{email}" if email else None, f"p:{phone}" if phone else None) if n]
        for node in nodes:
            find(node)
        if len(nodes) == 2:
            parent[find(nodes[0])] = find(nodes[1])
    groups: dict[str, set[str]] = {}
    for node in parent:
        groups.setdefault(find(node), set()).add(node)
    return {frozenset(g) for g in groups.values()}


def clusters(database_url: str) -> set[frozenset[str]]:
    """The identity graph's clusters, as sets of "e:email" and "p:phone"."""
    groups: dict[int, set[str]] = {}
    with psycopg.connect(database_url) as conn:
        for primary, email, phone in conn.execute(
            "SELECT coalesce(linked_id, id), email, phone_number FROM contact WHERE deleted_at IS NULL"
        ):
            group = groups.setdefault(primary, set())
            group |= {n for n in (f"e:{email}" if email else None, f"p:{phone}" if phone else None) if n}
    return {frozenset(g) for g in groups.values()}
