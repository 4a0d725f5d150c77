"""Two workers, the relay and the API at once, on heavily overlapping identifiers: every invariant holds
and the result is the one the events and calls determine, whatever the interleaving (rule 10)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx

from tests.support.database import processed, unpublished
from tests.support.graph import UNGUARDED_ENV
from tests.support.kafka import OutputReader, produce
from tests.support.polling import wait_until
from tests.support.processes import ApiServer, api_server
from tests.support.stack import Stack, family_checkouts, record_figures, verify_database, verify_outputs

EVENTS = 6000
FAMILIES = 400
CALLERS = 4
CALLS_EACH = 250


def call_api(
    api: ApiServer, seed: int, pairs: list[tuple[str | None, str | None]], errors: list[str]
) -> None:
    """POST /identify for the same households the events use, spelled the way people type them."""
    rng = random.Random(seed)
    with httpx.Client(base_url=api.url, headers=api.headers, timeout=30) as http:
        for _ in range(CALLS_EACH):
            family = rng.randrange(FAMILIES)
            email = f"load{family}.{rng.randrange(3)}@example.com"
            phone = 8_000_000 + family * 10 + rng.randrange(3)
            response = http.post(
                "/identify",
                json={"email": f"  {email.upper()} ", "phoneNumber": f"{phone:,}".replace(",", "-")},
            )
            if response.status_code != 200:
                errors.append(f"{response.status_code} {response.text}")
            elif email not in response.json()["contact"]["emails"]:
                errors.append("the answer lacks the request's email")
            pairs.append((email, str(phone)))


def test_worker_relay_and_api_together_under_overlapping_load(stack: Stack, tmp_path: Path) -> None:
    checkouts = family_checkouts(EVENTS, random.Random(10), families=FAMILIES, prefix="load")
    api_pairs: list[tuple[str | None, str | None]] = []
    errors: list[str] = []
    url = stack.database_url
    reader = OutputReader(stack.bootstrap, stack.topics.outputs)
    try:
        with api_server(url, tmp_path, env=UNGUARDED_ENV) as api:
            produce(stack.bootstrap, stack.topics.checkout, [c.record() for c in checkouts])
            started = time.monotonic()
            stack.start("worker", WORKER_BATCH_SIZE="100")
            stack.start("worker", WORKER_BATCH_SIZE="100")
            stack.start("relay")
            # The calls race the workers' transactions on the same clusters.
            wait_until(lambda: processed(url) > 0, 60, "the workers to start")
            callers = [
                threading.Thread(target=call_api, args=(api, seed, api_pairs, errors))
                for seed in range(CALLERS)
            ]
            for caller in callers:
                caller.start()
            for caller in callers:
                caller.join(180)
            overlap = processed(url)
            wait_until(lambda: processed(url) == EVENTS, 180, "every event processed", 0.5)
            wait_until(lambda: unpublished(url) == 0, 60, "every outbox row published")
            elapsed = round(time.monotonic() - started, 1)
        assert errors == []
        figures = verify_database(url, checkouts, api_pairs)
        figures |= verify_outputs(reader, checkouts, url)
    finally:
        reader.close()
        stack.close()
    record_figures(
        "load-overlapping",
        events_in=EVENTS,
        events_applied=processed(url),
        api_calls=len(api_pairs),
        workers=2,
        events_processed_when_the_calls_ended=overlap,
        run_seconds=elapsed,
        **figures,
    )
