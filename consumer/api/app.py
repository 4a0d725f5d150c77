"""The FastAPI application: factory, lifespan (connection pool), error handlers and middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
import swagger_ui_bundle  # type: ignore[import-untyped]
from anyio import CapacityLimiter
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from psycopg_pool import ConnectionPool

from consumer import db, heap
from consumer.api import auth, blocks, errors, lifecycle, metrics, routes
from consumer.api.batching import Reconciler
from consumer.api.db import Database
from consumer.config import Settings, get_settings
from consumer.console import create_console
from consumer.core import Guardrails
from consumer.core.blocklist import BlockedCache
from consumer.logs import configure_logging
from consumer.normalize import Normalizer

DESCRIPTION = """Links every email and phone number a buyer uses into one customer identity.

Every route but `/healthz`, `/readyz` and `/metrics` needs an API key (`Authorization: Bearer <key>`)
with the scope its security requirement names. Every error has the body
`{"error": {"code": ..., "message": ..., "field": ...}}`; see docs/api.md."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Each uvicorn worker process builds its own app, so logging is configured here too.
    configure_logging(settings)
    auth.warn_if_open(settings)
    normalizer = Normalizer.from_settings(settings)
    app = FastAPI(
        title="Identity reconciliation API",
        version="1",
        description=DESCRIPTION,
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.normalizer = normalizer
    # This process's blocks, shared by its calls, its blocklist routes and its console (so an unblock
    # here is forgotten at once); the worker and the CLI keep none.
    ttl = settings.api_blocklist_cache_ttl_s
    app.state.guard = Guardrails.of(settings, BlockedCache(ttl) if ttl else None)
    _serve_docs(app)
    errors.install(app)
    app.router.routes.insert(0, routes.identify_route)
    app.include_router(routes.router)
    app.include_router(blocks.router)
    app.include_router(lifecycle.router)
    app.mount("/console", create_console(app, settings))
    app.add_middleware(metrics.MetricsMiddleware)
    openapi = app.openapi()
    schemas = openapi["components"]["schemas"]
    schemas["IdentifyRequest"] = routes.identify_request_schema(normalizer)
    schemas["BlockRequest"] = blocks.block_request_schema(normalizer)
    schemas["ErasureRequest"] = lifecycle.erasure_request_schema(schemas["IdentifyRequest"])
    auth.document(openapi)
    return app


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the assets the swagger-ui-bundle package ships, not from a CDN: the
    page works offline and sends the browser nowhere else."""
    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    pool: ConnectionPool = ConnectionPool(
        settings.database_url,
        min_size=settings.api_pool_min_size,
        max_size=settings.api_pool_max_size,
        timeout=settings.api_pool_timeout_s,
        kwargs=db.connection_kwargs(settings, "identity-api"),
        open=False,
        name="identity-api",
    )
    # Not waiting for connections lets the process start while the database is down: /healthz
    # answers, /readyz says 503, and the pool keeps reconnecting in the background.
    pool.open(wait=False)
    database = Database(pool, CapacityLimiter(settings.api_pool_max_size))
    reconciler = Reconciler(
        database,
        app.state.guard,
        max_batch=settings.api_batch_max_size,
        drainers=settings.api_batch_drainers,
        linger_s=settings.api_batch_linger_ms / 1000,
        max_waiting=max(1, settings.api_pool_max_size - settings.api_batch_drainers),
    )
    app.state.database = database
    app.state.reconciler = reconciler
    app.state.access = auth.AccessControl(settings, database)
    reconciler.start()
    # A full collection would otherwise walk FastAPI's and pydantic's whole heap, a pause of tens of
    # milliseconds that set p99 (docs/api.md, "Benchmark").
    heap.settle()
    try:
        yield
    finally:
        await reconciler.stop()
        await anyio.to_thread.run_sync(pool.close)
        metrics.process_exited()
