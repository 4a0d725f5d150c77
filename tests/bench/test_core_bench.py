"""The core benchmark applies the API's mix in batches of each size and fits its cost per transaction."""

from __future__ import annotations

import re
from itertools import islice

import psycopg
import pytest

from bench.core_bench import fit, inputs, main
from tests.support.services import fresh_database


def test_the_fit_finds_a_fixed_cost_and_a_cost_per_input() -> None:
    assert fit([(1, 1300.0), (4, 1900.0), (16, 4300.0)]) == pytest.approx((1100.0, 200.0))


def test_inputs_are_the_api_mix_as_the_route_builds_them() -> None:
    first = list(islice(inputs(seed=3), 200))
    assert len({i.event_id for i in first}) == 200
    assert not any(i.idempotent or i.publish_unchanged for i in first)
    emails = [i.identifiers.email for i in first]
    assert len(set(emails)) < len(emails)  # repeats and known customers, not only new ones


def test_a_run_reports_each_batch_size_and_leaves_a_valid_graph(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with fresh_database(database_url) as url:
        code = main(["--database-url", url, "--batch-sizes", "1", "4", "--inputs", "40", "--customers", "50"])
        with psycopg.connect(url) as conn:
            (created,) = conn.execute(
                "SELECT count(*) FROM contact WHERE source = 'urn:bench:core'"
            ).fetchone() or (0,)
    output = capsys.readouterr().out
    assert code == 0
    assert re.search(r"batch +1: core CPU +\d+ µs/transaction", output)
    assert re.search(r"batch +4: core CPU +\d+ µs/transaction", output)
    assert re.search(r"core CPU = -?\d+ µs per transaction \+ -?\d+ µs per input", output)
    assert "invariant violations 0" in output
    assert created > 0
