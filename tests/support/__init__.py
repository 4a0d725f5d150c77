"""What the tests (and the benchmarks) share: real service processes, topics, Kafka helpers, bounded
waits, and a union-find over identifiers. Fixtures live in `tests.support.fixtures`, registered once
in tests/conftest.py through `pytest_plugins`; no test module imports another's fixtures."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The CloudEvents source of the tests' checkout events.
SOURCE = "urn:test:checkout"
# A throwaway server's data need not survive a crash: these make the tests' PostgreSQL much faster.
FAST_POSTGRES = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
