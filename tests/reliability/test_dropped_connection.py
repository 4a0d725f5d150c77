"""The worker's and the API's database connections: kept alive by TCP keepalives, and recovered after
the link drops.

Between the services and PostgreSQL sits a TCP proxy. While idle, every service socket to it has the
keepalive timer armed (/proc/net/tcp), so a peer that vanished without a word is noticed within about
half a minute; a silent drop itself cannot be staged on loopback without privileges, the kernel of the
proxy's side would answer the probes. Then the proxy drops every connection and refuses new ones for a
while: the worker and the API reconnect by themselves and carry on, with nothing lost or doubled.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from consumer.local.embedded import free_port
from tests.support.database import processed
from tests.support.kafka import envelope, produce, structured
from tests.support.polling import wait_until
from tests.support.processes import Service, api_server
from tests.support.stack import Stack, TcpProxy

KEEPALIVE_TIMER = 2  # /proc/net/tcp's "tr" column: the keepalive timer is armed
KEEPALIVE_IDLE_S = 10

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/net/tcp")


def proxied(database_url: str) -> tuple[TcpProxy, str]:
    """A proxy in front of the database (TCP or unix socket) and the URL that goes through it."""
    params = conninfo_to_dict(database_url)
    host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
    listen = free_port()
    if host.startswith("/"):
        proxy = TcpProxy(None, listen, target_socket=f"{host}/.s.PGSQL.{port}")
    else:
        proxy = TcpProxy(port, listen)
    user, dbname = params.get("user", "postgres"), params.get("dbname", "postgres")
    password = f":{params['password']}" if params.get("password") else ""
    return proxy, f"postgresql://{user}{password}@127.0.0.1:{listen}/{dbname}"


def sockets_to(port: int, pid: int) -> list[tuple[int, int]]:
    """(timer kind, jiffies until it fires) of each socket of process `pid` connected to `port`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = fd.readlink().as_posix() if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == port and fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
            timer, when = fields[5].split(":")
            found.append((int(timer, 16), int(when, 16)))
    return found


def armed(service: Service, port: int) -> bool:
    """Every connection of the service to `port` has its keepalive timer set, due within the idle time."""
    sockets = sockets_to(port, service.pid)
    return bool(sockets) and all(
        timer == KEEPALIVE_TIMER and when <= KEEPALIVE_IDLE_S * 1000 for timer, when in sockets
    )


def test_worker_and_api_keep_their_connections_alive_and_recover_when_they_drop(
    stack: Stack, database_url: str, db: psycopg.Connection[object], tmp_path: Path
) -> None:
    proxy, url = proxied(database_url)
    try:
        stack.database_url = url
        worker = stack.start("worker")
        produce(stack.bootstrap, stack.topics.checkout, [structured(envelope("a0", "a0@example.com"))])
        wait_until(lambda: processed(database_url) == 1, 60, "the first event")
        with api_server(url, tmp_path, ready="/readyz") as api, httpx.Client(base_url=api.url) as http:
            assert http.post("/identify", json={"email": "caller@example.org"}).status_code == 200
            # Idle now: the kernel keeps probing each connection, so a vanished peer is noticed.
            wait_until(lambda: armed(worker, proxy.port), 30, "the worker's keepalive timers")
            wait_until(lambda: armed(api, proxy.port), 30, "the API's keepalive timers")

            proxy.cut()
            produce(stack.bootstrap, stack.topics.checkout, [structured(envelope("a1", "a1@example.com"))])
            wait_until(
                lambda: http.post("/identify", json={"email": "b@example.org"}).status_code == 503,
                30,
                "the API to notice the dropped link",
            )
            proxy.restore()

            wait_until(lambda: processed(database_url) == 2, 90, "the worker to recover")
            wait_until(
                lambda: http.post("/identify", json={"email": "c@example.org"}).status_code == 200,
                60,
                "the API to recover",
            )
        assert worker.running()
        assert worker.logged("transient failure; retrying")
    finally:
        proxy.close()
