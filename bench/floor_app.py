"""The floor of `bench.api_bench --floor`: the least a correct POST /identify must do, as a minimal app.

A plain FastAPI app, an async psycopg pool in autocommit, and per call one round trip: the indexed
lookup of the email and the phone (the service's partial indexes) and, when neither matched, the
insert of a new primary row, committed (durably, when PostgreSQL is). It answers the service's JSON
shape from the rows it found. No guardrails, no merges, no outbox, no auth: a yardstick, not a service.

Served by `python -m bench.floor_app --port P --workers N` with `DATABASE_URL` set.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel
from starlette.responses import Response

LOOKUP_OR_INSERT = """
WITH found AS (
    SELECT id, email, phone_number, coalesce(linked_id, id) AS primary_id FROM contact
    WHERE deleted_at IS NULL AND email IS NOT NULL AND email = %(email)s
    UNION ALL
    SELECT id, email, phone_number, coalesce(linked_id, id) FROM contact
    WHERE deleted_at IS NULL AND phone_number IS NOT NULL AND phone_number = %(phone)s
), created AS (
    INSERT INTO contact
        (email, phone_number, link_precedence, created_at, updated_at, source, source_event_id)
    SELECT %(email)s, %(phone)s, 'primary', now(), now(), 'urn:bench:floor', %(id)s
    WHERE NOT EXISTS (SELECT FROM found)
    RETURNING id, email, phone_number, id AS primary_id
)
SELECT * FROM found UNION ALL SELECT * FROM created"""


class Body(BaseModel):
    email: str | None = None
    phoneNumber: str | None = None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    size = int(os.environ.get("API_POOL_MAX_SIZE", "8"))
    pool = AsyncConnectionPool(
        os.environ["DATABASE_URL"], min_size=size, max_size=size, kwargs={"autocommit": True}, open=False
    )
    await pool.open(wait=True)
    app.state.pool = pool
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/identify")
async def identify(body: Body) -> Response:
    email = body.email.strip().lower() if body.email else None
    phone = "".join(c for c in body.phoneNumber if c.isdigit() or c == "+") if body.phoneNumber else None
    pool: AsyncConnectionPool[Any] = app.state.pool
    async with pool.connection() as conn:
        cursor = await conn.execute(
            LOOKUP_OR_INSERT, {"email": email, "phone": phone, "id": str(uuid.uuid4())}
        )
        rows = await cursor.fetchall()
    primary = min(row[3] for row in rows)
    contact = {
        "primaryContatctId": primary,
        "primaryContactId": primary,
        "emails": list(dict.fromkeys(row[1] for row in rows if row[1])),
        "phoneNumbers": list(dict.fromkeys(row[2] for row in rows if row[2])),
        "secondaryContactIds": sorted({row[0] for row in rows} - {primary}),
    }
    return Response(orjson.dumps({"contact": contact}), media_type="application/json")


@app.get("/readyz")
async def readyz() -> Response:
    return Response(b'{"status":"ready"}', media_type="application/json")


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.floor_app", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    uvicorn.run(
        "bench.floor_app:app", host="127.0.0.1", port=args.port, workers=args.workers, log_level="warning"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
