"""PostgreSQL connection settings, written once for the worker, the relay and the API's pool.

Every connection names its process (`application_name`, seen in pg_stat_activity), gives up connecting
after `DATABASE_CONNECT_TIMEOUT_S`, and turns on TCP keepalives: a connection whose peer vanished
without a word (a host that died, a NAT or firewall that forgot the flow) fails within about half a
minute instead of the operating system's two hours, and the process reconnects.
"""

from __future__ import annotations

from typing import Any

import psycopg

from consumer.config import Settings

# Probe after 10 s of silence, every 5 s, give up after 3 unanswered probes: an idle connection to a
# vanished peer is dead within ~25 s. Data sent and never acknowledged (a query in flight when the peer
# vanished) fails after tcp_user_timeout (ms) instead of ~15 minutes of retransmissions.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
# SQLSTATE classes meaning "the database cannot serve now, retry": connection exception, insufficient
# resources, operator intervention (shutdown), system error (I/O), transaction rollback (deadlock after
# the core's retries); and lock_not_available (a lock_timeout) and read_only_sql_transaction (a failover).
_RETRYABLE_CLASSES = frozenset({"08", "53", "57", "58", "40"})
_RETRYABLE_STATES = frozenset({"55P03", "25006"})


def connection_kwargs(settings: Settings, application_name: str) -> dict[str, Any]:
    """libpq parameters of every service connection (also the API pool's `kwargs`)."""
    return {
        "autocommit": True,
        "application_name": application_name,
        "connect_timeout": settings.database_connect_timeout_s,
        **KEEPALIVES,
    }


def connect(settings: Settings, application_name: str) -> psycopg.Connection[Any]:
    """An autocommit connection to `DATABASE_URL` with the service's connection settings."""
    return psycopg.connect(settings.database_url, **connection_kwargs(settings, application_name))


def unavailable(exc: BaseException) -> bool:
    """True for failures of the database itself rather than of one statement: it is down, restarting,
    out of resources, read-only during a failover. The pool's timeout and a lost connection carry no
    SQLSTATE. A statement the database refuses (a value too large for an index) fails again on retry."""
    if not isinstance(exc, psycopg.Error):
        return False
    if exc.sqlstate is None:
        return isinstance(exc, psycopg.OperationalError)
    return exc.sqlstate[:2] in _RETRYABLE_CLASSES or exc.sqlstate in _RETRYABLE_STATES
