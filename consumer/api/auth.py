"""Who is calling (DESIGN.md rule 19): API keys, scopes and per-client rate limits as route dependencies.

A route declares the client it serves, e.g. `client: ReadClient`; that is its whole access control.
Keys are looked up by their public id and cached for `API_AUTH_CACHE_TTL_S`, so a hot /identify adds
no database round trip; the cache holds the key's hash, never the key. Failed authentications draw on a
bucket per peer address; once it is empty, the peer's unknown keys are refused with 429 before any
lookup.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Final

import structlog
from fastapi import Request, Security
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from fastapi.security.utils import get_authorization_scheme_param

from consumer.api.db import Database
from consumer.api.errors import ApiError
from consumer.api.limits import RateLimiter
from consumer.clients import Client, KeyRecord, Scope, find_key, key_id
from consumer.config import Settings

log = structlog.get_logger(__name__)

# The client every call is attributed to (audit log, idempotency keys) when API_AUTH=off.
AUTH_OFF_CLIENT = Client("anonymous", frozenset(Scope))
# Unknown key ids are cached too (a miss costs a lookup); past this size the cache starts afresh.
CACHE_MAX_ENTRIES = 10_000

SCHEME = HTTPBearerModel(
    bearerFormat="idk_…",
    description="An API key from `identity clients create NAME --scopes …`: "
    "`Authorization: Bearer <key>`. The route's required scope is listed in its security requirement.",
)


class Authenticator:
    """Key lookups with a short cache. Revocation takes effect within `ttl_s` in every process."""

    def __init__(self, database: Database, ttl_s: float) -> None:
        self._database = database
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}

    async def lookup(self, public_id: str) -> KeyRecord | None:
        record = await self._database.run(partial(find_key, key_id=public_id))
        if len(self._cache) >= CACHE_MAX_ENTRIES:
            self._cache.clear()
        self._cache[public_id] = (time.monotonic(), record)
        return record

    async def authenticate(self, key: str, before_lookup: Callable[[], None] = lambda: None) -> Client | None:
        """The client owning this valid key, or None (malformed, unknown, expired or revoked).

        `before_lookup` runs when the database must be asked about a key not known to be good, and may
        refuse by raising: a key that was valid when last looked up is always looked up again."""
        public = key_id(key)
        if public is None:
            return None
        fetched_at, record = self._cache.get(public, (-math.inf, None))
        if time.monotonic() - fetched_at >= self._ttl_s:
            if not (record and record.verify(key)):
                before_lookup()
            record = await self.lookup(public)
        return record.verify(key) if record else None


class AccessControl:
    """Authentication, scope and rate limit of one API process (app.state.access)."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.enabled = settings.api_auth
        self.authenticator = Authenticator(database, settings.api_auth_cache_ttl_s)
        self.limiter = RateLimiter(database)
        self._settings = settings

    async def admit(self, request: Request, key: str | None, scope: Scope) -> Client:
        if not self.enabled:
            return AUTH_OFF_CLIENT
        client = (
            await self.authenticator.authenticate(key, partial(self._refuse_failing, request))
            if key
            else None
        )
        if client is None:
            s = self._settings
            failures = self.limiter.take(_peer(request), s.api_auth_failures_per_s, s.api_auth_failure_burst)
            if (wait := await failures) is not None:
                raise rate_limited(wait, "too many failed authentications from this address")
            raise ApiError(
                401,
                "unauthorized",
                "send a valid API key: `Authorization: Bearer <key>`"
                if key is None
                else "the API key is not valid (unknown, expired or revoked)",
                "Authorization",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if scope not in client.scopes:
            raise ApiError(403, "forbidden", f"this client lacks the `{scope}` scope this route needs")
        rate = client.rate_per_s or self._settings.api_rate_limit_per_s
        burst = client.burst or self._settings.api_rate_limit_burst
        if (wait := await self.limiter.take(f"client:{client.name}", rate, burst)) is not None:
            raise rate_limited(wait, "this client's request rate limit is exceeded")
        return client

    def _refuse_failing(self, request: Request) -> None:
        """A peer that failed too often gets no more lookups until its bucket refills."""
        if (wait := self.limiter.refusing(_peer(request))) is not None:
            raise rate_limited(wait, "too many failed authentications from this address")


def _peer(request: Request) -> str:
    """The bucket of failed authentications from the caller's address."""
    return f"peer:{request.client.host if request.client else 'unknown'}"


def rate_limited(wait_s: float, message: str) -> ApiError:
    return ApiError(429, "rate_limited", message, headers={"Retry-After": str(max(1, math.ceil(wait_s)))})


class RequireScope(SecurityBase):
    """The dependency behind `ReadClient` and `AdminClient`, called by `POST /identify` itself: the
    bearer scheme of the OpenAPI document and the check, in one dependency (each level costs FastAPI
    time per call)."""

    def __init__(self, scope: Scope) -> None:
        self.model = SCHEME
        self.scheme_name = "apiKey"
        self.scope = scope

    def security_requirement(self) -> list[dict[str, list[str]]]:
        """The OpenAPI security requirement of a route that calls this check itself, as
        `routes.identify` does: what `_client_of` documents for the others."""
        return [{self.scheme_name: [self.scope.value]}]

    async def __call__(self, request: Request) -> Client:
        scheme, key = get_authorization_scheme_param(request.headers.get("Authorization"))
        access: AccessControl = request.app.state.access
        return await access.admit(request, key if key and scheme.lower() == "bearer" else None, self.scope)


def _client_of(scope: Scope) -> Any:
    return Security(RequireScope(scope), scopes=[scope.value])


ReadClient = Annotated[Client, _client_of(Scope.READ)]
AdminClient = Annotated[Client, _client_of(Scope.ADMIN)]


_ERROR_BODY: Final = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
_AUTH_RESPONSES: Final = {
    "401": {
        "description": "Missing, unknown, expired or revoked API key",
        "content": _ERROR_BODY,
        "headers": {"WWW-Authenticate": {"schema": {"type": "string", "enum": ["Bearer"]}}},
    },
    "403": {"description": "The key lacks the scope this route needs", "content": _ERROR_BODY},
    "429": {
        "description": "Rate limit exceeded (the client's, or failed authentications from this address)",
        "content": _ERROR_BODY,
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    },
}


def document(openapi: dict[str, Any]) -> None:
    """Add the 401, 403 and 429 answers to every operation of the OpenAPI document that needs a key."""
    for item in openapi["paths"].values():
        for operation in item.values():
            if operation.get("security"):
                for status, response in _AUTH_RESPONSES.items():
                    operation["responses"].setdefault(status, response)


def warn_if_open(settings: Settings) -> None:
    if not settings.api_auth:
        log.warning(
            "API_AUTH=off: EVERY ROUTE IS OPEN TO ANYONE WHO CAN REACH THIS PORT, personal data and "
            "admin routes included; for local experiments only, never deploy this"
        )
