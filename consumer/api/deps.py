"""Request dependencies, as Annotated types the routes declare."""

from __future__ import annotations

from typing import Annotated

import pydantic_core
from fastapi import Depends, Request

from consumer.api.db import Database
from consumer.api.errors import ApiError
from consumer.config import Settings
from consumer.core import Guardrails
from consumer.core.links import Kind
from consumer.normalize import Identifiers, Normalizer


async def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _guard(request: Request) -> Guardrails:
    guard: Guardrails = request.app.state.guard
    return guard


async def _normalizer(request: Request) -> Normalizer:
    normalizer: Normalizer = request.app.state.normalizer
    return normalizer


SettingsDep = Annotated[Settings, Depends(_settings)]
DatabaseDep = Annotated[Database, Depends(_database)]
GuardDep = Annotated[Guardrails, Depends(_guard)]
NormalizerDep = Annotated[Normalizer, Depends(_normalizer)]


async def identifiers_of(request: Request) -> Identifiers:
    """The body of POST /identify, parsed and normalized (rules 1-2). A plain function, not a
    dependency: the hot route resolves its inputs itself (see `routes.identify`)."""
    state = request.app.state
    data = await _json_object(request, state.settings)
    normalizer: Normalizer = state.normalizer
    return normalizer.identifiers(data.get("email"), data.get("phoneNumber"))


async def _one_identifier(request: Request, settings: SettingsDep) -> tuple[Kind, str]:
    """A body naming exactly one email or phone (POST /erasure-requests), normalized as by /identify."""
    data = await _json_object(request, settings)
    normalizer: Normalizer = request.app.state.normalizer
    ids = normalizer.identifiers(data.get("email"), data.get("phoneNumber"))
    if ids.email is not None and ids.phone is not None:
        raise ApiError(422, "one_identifier", "send exactly one of 'email' and 'phoneNumber'")
    return ("email", ids.email) if ids.email is not None else ("phone", ids.partition_key)


async def _json_object(request: Request, settings: Settings) -> dict[str, object]:
    """The request body as a JSON object.

    pydantic-core parses it rather than orjson: it keeps integers beyond 64 bits exact, and a phone
    number sent as a long JSON number must not lose digits.
    """
    body = await _read_body(request, settings.api_max_body_bytes)
    if not body:
        raise ApiError(400, "missing_body", "the request body is empty; send a JSON object")
    try:
        data = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError:
        raise ApiError(400, "malformed_json", "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", "the request body must be a JSON object")
    return data


async def _read_body(request: Request, limit: int) -> bytes:
    # Not FastAPI(max_body_size=...): Starlette answers a declared oversized body with its own
    # plain-text 413, which would break the one error shape.
    too_large = ApiError(413, "body_too_large", f"the request body is larger than {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    # A chunked body has no length up front: count while reading and stop at the limit.
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


OneIdentifierBody = Annotated[tuple[Kind, str], Depends(_one_identifier)]
