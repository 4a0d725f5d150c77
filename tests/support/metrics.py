"""Reading a process's Prometheus endpoint."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(url: str) -> Samples:
    """Every sample of `url`/metrics, by (name, labels)."""
    response = httpx.get(url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(metrics: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when it is not there (a counter never incremented)."""
    return metrics.get((name, frozenset(labels.items())), 0.0)
