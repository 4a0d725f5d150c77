"""32 concurrent clients with overlapping identifiers leave the identity graph consistent (rule 10)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import psycopg

from consumer.core import check_invariants
from tests.support.graph import components
from tests.support.processes import ApiServer

CLIENTS = 32
REQUESTS_PER_CLIENT = 8


def requests_for(seed: int) -> list[dict[str, str]]:
    """Few identifiers, drawn at random, so the clients keep colliding and merging clusters."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(REQUESTS_PER_CLIENT):
        email = f"c{rng.randrange(24)}@hillvalley.edu"
        phone = str(5550100 + rng.randrange(24))
        bodies.append(
            rng.choice([{"email": email}, {"phoneNumber": phone}, {"email": email, "phoneNumber": phone}])
        )
    return bodies


async def run_clients(api: ApiServer, plans: list[list[dict[str, str]]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(
        base_url=api.url, headers=api.headers, timeout=30, limits=httpx.Limits(max_connections=CLIENTS)
    ) as http:

        async def one_client(plan: list[dict[str, str]]) -> list[httpx.Response]:
            return [await http.post("/identify", json=body) for body in plan]

        results = await asyncio.gather(*(one_client(plan) for plan in plans))
    return [response for responses in results for response in responses]


def test_concurrent_clients_keep_every_invariant(api: ApiServer, db: psycopg.Connection[Any]) -> None:
    plans = [requests_for(seed) for seed in range(CLIENTS)]

    responses = asyncio.run(run_clients(api, plans))

    assert [r.status_code for r in responses] == [200] * CLIENTS * REQUESTS_PER_CLIENT
    assert check_invariants(db) == []
    primaries = db.execute("SELECT count(*) FROM contact WHERE linked_id IS NULL").fetchone()
    assert primaries == (
        len(components((b.get("email"), b.get("phoneNumber")) for plan in plans for b in plan)),
    )
