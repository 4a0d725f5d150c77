"""The whole stack as real processes, checkout streams with the answer they must produce, a TCP proxy
that can cut a link, and the figures a run measured (the end-to-end, fault, load and security tests)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from consumer.core import check_invariants
from tests.support import ROOT, SOURCE
from tests.support.database import processed, scalar
from tests.support.graph import UNGUARDED, clusters, components
from tests.support.kafka import OutputReader, Record, envelope, structured
from tests.support.processes import Service
from tests.support.topics import Topics

FIGURES_DIR = ROOT / ".local" / "reliability"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def record_figures(name: str, **figures: object) -> None:
    """Print what a run measured and keep it in .local/reliability/NAME.json (docs/reliability.md)."""
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    text = json.dumps(figures, default=str)
    (FIGURES_DIR / f"{name}.json").write_text(text + "\n")
    print(f"\nFIGURES {name}: {text}")


@dataclass(frozen=True)
class Checkout:
    """One checkout event, its values already normalized (so they are what the rows must hold)."""

    event_id: str
    email: str | None
    phone: str | None
    time: datetime

    def record(self) -> Record:
        return structured(envelope(self.event_id, self.email, self.phone, time=self.time))


def overlapping_checkouts(
    count: int, rng: random.Random, *, emails: int, phones: int, prefix: str = "ev"
) -> list[Checkout]:
    """Checkouts over pools of emails and phones (the smaller the pools, the more matches and merges),
    with out-of-order times so late older events demote primaries too."""
    checkouts = []
    for i in range(count):
        email: str | None = f"{prefix}{rng.randrange(emails)}@example.com"
        phone: str | None = str(7_000_000 + rng.randrange(phones))
        if rng.random() < 0.1:
            email = None
        elif rng.random() < 0.1:
            phone = None
        when = T0 + timedelta(seconds=rng.randrange(10 * count), microseconds=rng.randrange(10**6))
        checkouts.append(Checkout(f"{prefix}-{i}", email, phone, when))
    return checkouts


def family_checkouts(count: int, rng: random.Random, *, families: int, prefix: str) -> list[Checkout]:
    """Checkouts of households sharing 3 emails and 3 phones in every combination, with a rare bridge
    into another household: identifiers overlap heavily, yet clusters stay small."""
    checkouts = []
    for i in range(count):
        family = rng.randrange(families)
        other = rng.randrange(families) if rng.random() < 0.01 else family
        email = f"{prefix}{family}.{rng.randrange(3)}@example.com"
        phone = str(8_000_000 + other * 10 + rng.randrange(3))
        when = T0 + timedelta(seconds=rng.randrange(10 * count), microseconds=rng.randrange(10**6))
        checkouts.append(Checkout(f"{prefix}-{i}", email, phone, when))
    return checkouts


@dataclass
class Stack:
    """Worker and relay processes of one test on one database and broker; `close()` kills them all."""

    database_url: str
    bootstrap: str
    topics: Topics
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)

    def base_env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "WORKER_METRICS_PORT": "0",
            "RELAY_METRICS_PORT": "0",
            "RELAY_POLL_INTERVAL_S": "0.2",
            "WORKER_RETRY_INITIAL_S": "0.2",
            "WORKER_RETRY_MAX_S": "2",
            "RELAY_RETRY_MAX_S": "2",
            **self.topics.env(),
            **self.env,
        }

    def start(self, command: str, **env: str) -> Service:
        log = self.log_dir / f"{command}-{len(self.services)}.log"
        service = Service(command, {**self.base_env(), **env}, log)
        self.services.append(service)
        return service

    def logs(self) -> list[Path]:
        return [s.log_path for s in self.services]

    def close(self) -> None:
        for service in self.services:
            service.close()


def verify_database(
    database_url: str,
    checkouts: list[Checkout],
    other_pairs: list[tuple[str | None, str | None]] | None = None,
) -> dict[str, int]:
    """What must hold whatever order the events were applied in; returns counts for the figures.

    - `identity check` is green (one primary per cluster, the oldest; links straight to it);
    - the clusters are the connected components of every event's (and `other_pairs`', the API
      calls') identifiers;
    - every row holds exactly the values and the time of the event that created it, and no event
      created two rows;
    - one processed_event and one identity.resolved outbox row per event, one merged row per merge.
    """
    by_id = {c.event_id: c for c in checkouts}
    with psycopg.connect(database_url) as conn:
        assert check_invariants(conn, UNGUARDED) == []
        rows = conn.execute(
            "SELECT source_event_id, email, phone_number, created_at FROM contact WHERE source = %s",
            (SOURCE,),
        ).fetchall()
        resolved = conn.execute(
            "SELECT payload->'data'->>'sourceEventId' FROM outbox_event"
            " WHERE event_type = 'identity.resolved' AND payload->'data'->>'sourceEventSource' = %s",
            (SOURCE,),
        ).fetchall()
    creators = Counter(event_id for event_id, *_ in rows)
    assert not [e for e, n in creators.items() if n > 1], "an event created two rows"
    for event_id, email, phone, created_at in rows:
        c = by_id[event_id]
        assert (email, phone, created_at) == (c.email, c.phone, c.time), event_id
    pairs = [(c.email, c.phone) for c in checkouts] + (other_pairs or [])
    assert clusters(database_url) == components(pairs)
    per_event = Counter(event_id for (event_id,) in resolved)
    assert set(per_event) == set(by_id), "an event has no identity.resolved row"
    duplicates = sum(n - 1 for n in per_event.values())
    assert duplicates == 0
    assert processed(database_url) == len(checkouts)
    merges = scalar(database_url, "SELECT count(*) FROM merge_log")
    assert (
        scalar(database_url, "SELECT count(*) FROM outbox_event WHERE event_type = 'identity.merged'")
        == merges
    )
    return {
        "rows": len(rows),
        "resolved_rows": len(resolved),
        "merges": merges,
        "duplicate_effects": duplicates,
    }


def verify_outputs(reader: OutputReader, checkouts: list[Checkout], database_url: str) -> dict[str, int]:
    """Every outbox event reached its topic (duplicates allowed, with the same CloudEvent id)."""
    outbox = scalar(database_url, "SELECT count(*) FROM outbox_event")
    messages = reader.read_until(lambda m: len({x.id for x in m}) >= outbox, timeout=120)
    ids = Counter(m.id for m in messages)
    wanted = {c.event_id for c in checkouts}
    answered = {
        m.value["data"]["sourceEventId"]
        for m in messages
        if m.value["type"] == "identity.resolved" and m.value["data"]["sourceEventSource"] == SOURCE
    }
    assert wanted <= answered, f"{len(wanted - answered)} events have no identity.resolved output"
    return {"outputs_published": len(ids), "output_redeliveries": sum(n - 1 for n in ids.values())}


class TcpProxy:
    """A loopback TCP proxy in a thread of its own, to a TCP port or a unix socket (`target_socket`).
    `cut()` drops every connection and stops listening (connections are refused, as from a host that is
    down) until `restore()` listens again."""

    def __init__(self, target_port: int | None, port: int, *, target_socket: str | None = None) -> None:
        self.target_port, self.port, self.target_socket = target_port, port, target_socket
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.restore()

    def _call(self, coroutine: Any) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _drop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.target_socket:
                up_reader, up_writer = await asyncio.open_unix_connection(self.target_socket)
            else:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)

    def cut(self) -> None:
        self._call(self._drop())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
