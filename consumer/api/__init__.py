"""The HTTP sidecar: POST /identify and friends, a thin adapter over the reconciliation core."""

from __future__ import annotations

import os
import secrets
import tempfile
from contextlib import ExitStack

from consumer.config import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def run_api(
    settings: Settings, *, host: str | None = None, port: int | None = None, workers: int | None = None
) -> int:
    """Serve with uvicorn until SIGINT/SIGTERM, which finish in-flight requests before exiting."""
    import uvicorn

    workers = workers or settings.api_processes
    with ExitStack() as stack:
        if workers > 1 and MULTIPROC_ENV not in os.environ:
            # Set before the workers start: prometheus-client picks its storage when first imported.
            os.environ[MULTIPROC_ENV] = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="identity-api-metrics-")
            )
        if workers > 1 and not settings.console_secret_key:
            # One key for every worker process, so a console session is valid whichever one answers.
            os.environ["CONSOLE_SECRET_KEY"] = secrets.token_urlsafe(32)
        uvicorn.run(
            "consumer.api.app:create_app",
            factory=True,
            host=host or settings.api_host,
            port=settings.api_port if port is None else port,
            workers=workers,
            log_config=None,
            access_log=settings.api_access_log,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    return 0
