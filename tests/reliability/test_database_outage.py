"""PostgreSQL stopped and restarted while checkout events flow and API calls arrive.

The worker backs off and resumes, the relay reconnects, the API answers 503 meanwhile (never another
5xx) and recovers; every event and every API call is applied exactly once.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx

from tests.support.database import processed, scalar, unpublished
from tests.support.graph import UNGUARDED_ENV
from tests.support.kafka import OutputReader, produce
from tests.support.polling import wait_until
from tests.support.processes import ApiServer, api_server
from tests.support.services import RestartablePostgres
from tests.support.stack import Stack, overlapping_checkouts, record_figures, verify_database, verify_outputs
from tests.support.topics import Topics

API_SOURCE = "identity-api"


class ApiCaller:
    """Calls POST /identify in a loop, each call with a new email and its own Idempotency-Key; a call
    answered 503 is retried later with the same key, as a careful client would."""

    def __init__(self, api: ApiServer) -> None:
        self.http = httpx.Client(base_url=api.url, headers=api.headers, timeout=15)
        self.statuses: list[tuple[float, int]] = []
        self.pending: list[int] = []
        self.done: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def call(self, n: int) -> int:
        response = self.http.post(
            "/identify",
            json={"email": f"caller{n}@example.org", "phoneNumber": f"+44 20 7946 {n:04d}"},
            headers={"Idempotency-Key": f"call-{n}"},
        )
        self.statuses.append((time.monotonic(), response.status_code))
        if response.status_code == 200:
            self.done.add(n)
        elif response.status_code == 503:
            assert response.headers["retry-after"]
            self.pending.append(n)
        return response.status_code

    def _loop(self) -> None:
        n = 0
        while not self._stop.is_set():
            self.call(n)
            n += 1
            self._stop.wait(0.02)

    def count(self, status: int, since: float = 0.0) -> int:
        return sum(1 for at, s in list(self.statuses) if s == status and at >= since)

    def finish(self) -> None:
        """Stop calling, then retry every call that got a 503 until it is answered."""
        self._stop.set()
        self._thread.join(30)
        while self.pending:
            n = self.pending.pop()
            if n not in self.done:
                assert self.call(n) == 200
        self.http.close()


def retried(stack: Stack, command: str) -> bool:
    wanted = {"worker": "transient failure; retrying", "relay": "relay round failed, retrying"}[command]
    return any(s.logged(wanted) for s in stack.services if s.log_path.name.startswith(command))


def test_database_restart_while_events_flow_and_api_calls_arrive(
    own_postgres: RestartablePostgres, kafka_bootstrap: str, tmp_path: Path
) -> None:
    url = own_postgres.url
    stack = Stack(
        url,
        kafka_bootstrap,
        Topics.create(kafka_bootstrap, 2),
        tmp_path,
        env={"WORKER_BATCH_SIZE": "50", "KAFKA_MAX_POLL_INTERVAL_MS": "7000", **UNGUARDED_ENV},
    )
    checkouts = overlapping_checkouts(2000, random.Random(6), emails=1500, phones=1500, prefix="pg")
    half = len(checkouts) // 2
    reader = OutputReader(kafka_bootstrap, stack.topics.outputs)
    try:
        with api_server(url, tmp_path, env={"API_POOL_TIMEOUT_S": "1", **UNGUARDED_ENV}) as api:
            stack.start("worker")
            stack.start("relay")
            caller = ApiCaller(api)
            produce(kafka_bootstrap, stack.topics.checkout, [c.record() for c in checkouts[:half]])
            wait_until(lambda: processed(url) == half, 60, "the events before the outage")

            own_postgres.stop()
            down = time.monotonic()
            produce(kafka_bootstrap, stack.topics.checkout, [c.record() for c in checkouts[half:]])
            wait_until(lambda: caller.count(503, down) >= 5, 60, "the API to answer 503")
            wait_until(lambda: retried(stack, "worker") and retried(stack, "relay"), 60, "both to back off")
            own_postgres.start()
            up = time.monotonic()

            api_recovery = wait_until(lambda: caller.count(200, up) > 0, 60, "the API to answer 200 again")
            worker_recovery = wait_until(lambda: processed(url) == len(checkouts), 120, "every event")
            relay_recovery = wait_until(lambda: unpublished(url) == 0, 120, "every outbox row published")
            caller.finish()
            assert {s for _, s in caller.statuses} <= {200, 503}
        for service in stack.services:
            assert service.process.poll() is None, f"{service.log_path.name} died"

        calls = len(caller.done)
        figures = verify_database(
            url,
            checkouts,
            [(f"caller{n}@example.org", f"+44207946{n:04d}") for n in caller.done],
        )
        assert scalar(url, "SELECT count(*) FROM processed_event WHERE source = %s", (API_SOURCE,)) == calls
        assert scalar(url, "SELECT count(*) FROM contact WHERE source = %s", (API_SOURCE,)) == calls
        figures |= verify_outputs(reader, checkouts, url)
    finally:
        reader.close()
        stack.close()
    record_figures(
        "database-outage",
        events_in=len(checkouts),
        events_applied=processed(url),
        outage_seconds=round(up - down, 1),
        api_calls=calls,
        api_503_during_outage=caller.count(503),
        api_calls_applied_once=calls,
        api_recovery_s=api_recovery,
        worker_recovery_s=worker_recovery,
        relay_recovery_s=relay_recovery,
        **figures,
    )
