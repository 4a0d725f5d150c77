"""The console as an application mounted at /console by the API app (consumer/api/app.py).

A sub-application of its own: its session cookie, HTML error pages and security headers stay off the
API's routes, whose hot path (POST /identify) gains no middleware.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from consumer.api.errors import ApiError
from consumer.config import Settings
from consumer.console import admin, pages
from consumer.console.pipeline import RateMeter
from consumer.console.session import Forbidden, SignInRequired, sign_out

log = structlog.get_logger(__name__)

PREFIX = "/console"
SESSION_COOKIE = "identity_console"
# Scripts and styles from the package only: no CDN, no inline script. Inline style attributes are
# allowed because the graph and chart libraries size their canvases with them.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_console(api: FastAPI, settings: Settings) -> FastAPI:
    console = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    console.state.api = api
    console.state.settings = settings
    console.state.rate = RateMeter()
    console.state.guardrails = api.state.guard  # one cache of blocked values per process
    console.state.worker_metrics_url = (
        settings.console_worker_metrics_url or f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"
    )
    console.add_middleware(
        SessionMiddleware,
        secret_key=settings.console_secret_key or secrets.token_urlsafe(32),
        session_cookie=SESSION_COOKIE,
        max_age=settings.console_session_max_age_s,
        path=PREFIX,
        same_site="strict",
        https_only=settings.console_secure_cookie,
    )
    console.middleware("http")(_security_headers)
    console.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    console.include_router(pages.router)
    console.include_router(admin.router)
    console.add_exception_handler(SignInRequired, _sign_in_required)
    console.add_exception_handler(Forbidden, _forbidden)
    console.add_exception_handler(pages.BadInput, _bad_input)
    console.add_exception_handler(RequestValidationError, _bad_input)
    console.add_exception_handler(Exception, _internal_error)
    console.add_exception_handler(ApiError, _refused)
    return console


Handler = Callable[[Request], Awaitable[Response]]


async def _security_headers(request: Request, call_next: Handler) -> Response:
    response = await call_next(request)
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.media_type == "text/html":
        # Pages show personal data: no copy in the browser's cache once signed out.
        response.headers["Cache-Control"] = "no-store"
    return response


async def _sign_in_required(request: Request, _: Exception) -> Response:
    return RedirectResponse(request.url_for("sign_in_form"), status_code=303)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("console error", error=type(exc).__name__)
    message = "something went wrong on the server; the error is in the API's log"
    return pages.render(request, "error.html", status=500, title="Server error", message=message)


async def _refused(request: Request, exc: Exception) -> Response:
    """The API's guard said no: a key no longer valid ends the session; a scope or a rate limit is shown."""
    assert isinstance(exc, ApiError)
    if exc.status == 401:
        sign_out(request)
        return await _sign_in_required(request, exc)
    page = {"title": "Not allowed", "message": exc.message}
    return pages.render(request, "error.html", status=exc.status, headers=exc.headers, **page)


async def _bad_input(request: Request, exc: Exception) -> Response:
    message = str(exc) if isinstance(exc, pages.BadInput) else "a field or parameter is not valid"
    return pages.render(request, "error.html", status=422, title="Not a valid value", message=message)


async def _forbidden(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Forbidden)
    return pages.render(request, "error.html", status=403, title="Not allowed", message=exc.message)
