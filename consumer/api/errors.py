"""One error shape for every failure: `{"error": {"code", "message", "field"}}` (docs/api.md).

Messages are written here or by the normalizer, never copied from the request, so they cannot echo
an email address or a phone number.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

import psycopg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from consumer.api.responses import json_response
from consumer.core import IdempotencyKeyReused, IdentifiersBlocked
from consumer.db import unavailable
from consumer.normalize import IdentifierError, MissingIdentifiers

log = structlog.get_logger(__name__)

RETRY_AFTER_S = "1"


class ErrorDetail(BaseModel):
    code: str = Field(description="Short machine-readable reason, e.g. `no_identifiers`, `invalid_type`.")
    message: str = Field(description="Human-readable explanation; never contains the submitted values.")
    field: str | None = Field(description="The offending field, header or parameter, if there is one.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    return json_response({"error": {"code": code, "message": message, "field": field}}, status, headers)


def responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses=` entries documenting the error body for each status."""
    return {status: {"model": ErrorResponse, "description": HTTPStatus(status).phrase} for status in statuses}


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)


async def _identifier_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, IdentifierError)
    status = 400 if isinstance(exc, MissingIdentifiers) else 422
    field = None if isinstance(exc, MissingIdentifiers) else exc.field
    return error_response(status, exc.reason, str(exc), field)


async def _identifiers_blocked(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, IdentifiersBlocked)
    return error_response(
        422,
        "blocked_identifier",
        "every identifier of the request is blocked (see GET /blocked-values); nothing was applied",
    )


async def _key_reused(_: Request, exc: Exception) -> Response:
    return error_response(
        409,
        "idempotency_key_reused",
        "this Idempotency-Key was already used with a different request body; nothing was applied",
        "Idempotency-Key",
    )


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    where = [str(part) for part in first.get("loc", ())]
    field = where[-1] if len(where) > 1 else None
    # pydantic's `msg` describes the rule broken, not the input, so it is safe to return.
    message = f"{' '.join(where)}: {first.get('msg', 'invalid value')}" if where else first.get("msg", "")
    return error_response(422, "invalid_" + (where[0] if where else "request"), message, field)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    headers = exc.headers
    if exc.status_code == 405:
        # Starlette names the methods of the first route on the path only; a path served by several
        # routes (GET and POST /blocked-values) allows them all.
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document has for the request's path."""
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        if compile_path(template)[0].fullmatch(request.url.path):
            methods |= {method.upper() for method in operations}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


async def _database_error(request: Request, exc: Exception) -> Response:
    if not unavailable(exc):
        return await _internal_error(request, exc)
    log.warning("database unavailable", error=type(exc).__name__)
    return error_response(
        503,
        "database_unavailable",
        "the database is unavailable; retry later (with the same Idempotency-Key to stay safe)",
        headers={"Retry-After": RETRY_AFTER_S},
    )


async def _internal_error(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", error=type(exc).__name__)
    return error_response(500, "internal_error", "internal server error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(IdentifierError, _identifier_error)
    app.add_exception_handler(IdempotencyKeyReused, _key_reused)
    app.add_exception_handler(IdentifiersBlocked, _identifiers_blocked)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    # Also catches psycopg_pool.PoolTimeout, a subclass: no connection came free in time.
    app.add_exception_handler(psycopg.OperationalError, _database_error)
    app.add_exception_handler(Exception, _internal_error)
