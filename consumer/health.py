"""`identity health worker|relay`: is the process's loop still going round? For container health checks.

The worker and the relay stamp a heartbeat gauge every time their loop goes round, including while they
wait out an outage. A process whose metrics port answers but whose loop is stuck (a hung call, a
deadlock) is therefore reported unhealthy, which a check of the port alone cannot see.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from consumer.config import Settings

_GAUGES = {
    "worker": "identity_worker_loop_heartbeat_timestamp_seconds",
    "relay": "identity_relay_loop_heartbeat_timestamp_seconds",
}


def check_loop(settings: Settings, component: str, max_age: float) -> int:
    port = settings.worker_metrics_port if component == "worker" else settings.relay_metrics_port
    if not port:
        print(f"unhealthy: {component.upper()}_METRICS_PORT is 0, nothing to ask", file=sys.stderr)
        return 1
    host = "127.0.0.1" if settings.metrics_host in ("0.0.0.0", "") else settings.metrics_host
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: the {component}'s metrics endpoint does not answer: {exc}", file=sys.stderr)
        return 1
    stamps = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == _GAUGES[component]
    ]
    age = time.time() - max(stamps, default=0.0)
    if age > max_age:
        print(f"unhealthy: the {component}'s loop last went round {age:.0f} s ago", file=sys.stderr)
        return 1
    print(f"healthy: the {component}'s loop went round {age:.1f} s ago")
    return 0
