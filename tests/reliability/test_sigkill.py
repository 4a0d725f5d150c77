"""kill -9 the worker and the relay again and again during a run: nothing lost, nothing applied twice.

The default variant runs in the normal suite; the 100,000-event soak with 20 kills is `-m soak`.
With Tansu a SIGKILLed worker blocks its partitions for about two session timeouts (~12 s), which is
most of the run time: the replacement worker only gets them after that.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import time

import pytest

from tests.support import ROOT
from tests.support.database import processed, scalar, unpublished
from tests.support.kafka import OutputReader, produce
from tests.support.polling import wait_until
from tests.support.stack import Stack, overlapping_checkouts, record_figures, verify_database, verify_outputs


def published_resolved(database_url: str) -> int:
    return scalar(
        database_url,
        "SELECT count(*) FROM outbox_event"
        " WHERE event_type = 'identity.resolved' AND published_at IS NOT NULL",
    )


def run_with_kills(stack: Stack, name: str, events: int, kills: int, timeout: float) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    # Pools as large as the stream: many matches and merges, yet no cluster spanning half the data (whose
    # consolidated view would make every event slow, which is not what this test is about).
    checkouts = overlapping_checkouts(events, rng, emails=events, phones=events, prefix=name)
    # The stream arrives in one chunk per kill and one more, so no process can run far ahead of the
    # kills: each kill lands while the stream still has work for the victim.
    bounds = [i * events // (kills + 1) for i in range(kills + 2)]
    chunks = [[c.record() for c in checkouts[a:b]] for a, b in itertools.pairwise(bounds)]
    url = stack.database_url
    produce(stack.bootstrap, stack.topics.checkout, chunks[0])
    services = {"worker": stack.start("worker", WORKER_BATCH_SIZE="200"), "relay": stack.start("relay")}
    progress = {"worker": lambda: processed(url), "relay": lambda: published_resolved(url)}
    started = time.monotonic()
    killed = {"worker": 0, "relay": 0}
    resumed: dict[str, list[float]] = {"worker": [], "relay": []}
    for k in range(kills):
        victim = "worker" if k % 2 == 0 else "relay"
        # Somewhere inside the chunk; the exact moment is wherever the process is then.
        target = bounds[k] + rng.randrange(1, bounds[k + 1] - bounds[k])
        wait_until(
            lambda victim=victim, target=target: progress[victim]() >= target,
            timeout,
            f"{victim} progress to {target} before kill {k} (seed {seed})",
            0.05,
        )
        services[victim].kill()
        # Read after the kill: a batch the victim committed just before it counts as its own.
        before = progress[victim]()
        killed[victim] += 1
        services[victim] = stack.start(victim, WORKER_BATCH_SIZE="200")
        produce(stack.bootstrap, stack.topics.checkout, chunks[k + 1])
        # Until the replacement makes progress: for a worker, mostly the broker's session timeout.
        resumed[victim].append(
            wait_until(lambda v=victim, b=before: progress[v]() > b, timeout, f"{victim} to resume", 0.1)
        )
    wait_until(lambda: processed(url) == events, timeout, f"every event processed (seed {seed})", 0.5)
    wait_until(lambda: unpublished(url) == 0, timeout, f"every outbox row published (seed {seed})", 0.5)
    elapsed = round(time.monotonic() - started, 1)

    figures = verify_database(url, checkouts)
    check = subprocess.run(
        [sys.executable, "-m", "consumer", "check"],
        cwd=ROOT,
        env={**os.environ, **stack.base_env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    reader = OutputReader(stack.bootstrap, stack.topics.outputs)
    try:
        figures |= verify_outputs(reader, checkouts, url)
    finally:
        reader.close()
    for service in services.values():
        assert service.process.poll() is None, "a replacement process died"
    record_figures(
        name,
        seed=seed,
        events_in=events,
        events_applied=processed(url),
        worker_kills=killed["worker"],
        relay_kills=killed["relay"],
        worker_resumed_after_s=resumed["worker"],
        relay_resumed_after_s=resumed["relay"],
        run_seconds=elapsed,
        identity_check=check.stdout.strip(),
        **figures,
    )


def test_worker_and_relay_killed_six_times_during_10k_events(stack: Stack) -> None:
    run_with_kills(stack, "sigkill-10k", events=10_000, kills=6, timeout=120)


@pytest.mark.soak
def test_soak_worker_and_relay_killed_twenty_times_during_100k_events(stack: Stack) -> None:
    run_with_kills(stack, "sigkill-100k-soak", events=100_000, kills=20, timeout=900)
