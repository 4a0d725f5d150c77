"""The routes: POST /identify, GET /contacts/{id}, health, readiness and metrics (docs/api.md)."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Annotated, Any, Literal

import anyio.to_thread
import psycopg
import structlog
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field
from starlette import types
from starlette.responses import Response
from starlette.routing import Match, Route

from consumer.api import metrics
from consumer.api.auth import ReadClient, RequireScope
from consumer.api.deps import DatabaseDep, identifiers_of
from consumer.api.errors import ApiError, responses
from consumer.api.responses import json_response
from consumer.audit import Action, record_audit
from consumer.clients import Client, Scope
from consumer.contract import IdentifyResponse
from consumer.core import ContactView, Input, contact_view
from consumer.migrate import pending
from consumer.normalize import Normalizer

log = structlog.get_logger(__name__)
router = APIRouter()

MAX_CONTACT_ID = 2**63 - 1
IDEMPOTENCY_KEY_MAX_LENGTH = 255
READY_TIMEOUT_S = 2.0
REPLAYED_HEADER = "Idempotent-Replayed"


class Status(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    reason: str | None = Field(description="Why the process is not ready, or null.")
    pendingMigrations: list[str] = Field(description="Migration versions not applied yet.")


IDEMPOTENCY_KEY = "Idempotency-Key"
_IDEMPOTENCY_KEY_DESCRIPTION = (
    "Makes a retried call return the first answer without applying it twice. "
    "Reusing a key with a different body is refused with 409. Keys are scoped per client."
)
_IDEMPOTENCY_KEY_PARAMETER = {
    "name": IDEMPOTENCY_KEY,
    "in": "header",
    "required": False,
    "description": _IDEMPOTENCY_KEY_DESCRIPTION,
    "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH},
}
_IDENTIFY_ACCESS = RequireScope(Scope.IDENTIFY)


def idempotency_key_of(request: Request) -> str | None:
    """The Idempotency-Key header, if sent; 422 unless 1 to 255 characters long."""
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is not None and not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
        rule = "at least 1 character" if not key else f"at most {IDEMPOTENCY_KEY_MAX_LENGTH} characters"
        raise ApiError(
            422, "invalid_header", f"header {IDEMPOTENCY_KEY}: String should have {rule}", IDEMPOTENCY_KEY
        )
    return key


# Python's whitespace (what `str.strip` removes and `\s` matches in `Normalizer`), spelled out:
# ECMAScript's `\s`, which JSON Schema patterns use, lacks \x1c-\x1f and \x85 and has \ufeff.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_BLANK = f"[{_SPACE}]*"
# PostgreSQL text cannot hold NUL. Lone surrogates are refused too, but a surrogate range makes a
# pattern unusable for schemathesis, so only the descriptions say so.
_CHAR = rf"[^{_SPACE}\x00]"
_SEPARATORS = rf"[{_SPACE}\-.()]*"


def email_pattern(normalizer: Normalizer, *, blank: bool) -> str:
    """What `Normalizer` accepts as an email (and, with `blank`, as an absent one)."""
    value = rf"{_CHAR}(?:[^\x00]{{0,{normalizer.email_max_length - 2}}}{_CHAR})?"
    return rf"^{_BLANK}(?:{value})?{_BLANK}$" if blank else rf"^{_BLANK}{value}{_BLANK}$"


def phone_pattern(normalizer: Normalizer, *, blank: bool) -> str:
    """What `Normalizer` accepts as a phone string (and, with `blank`, as an absent one: whitespace
    only; separators without a digit are an invalid phone)."""
    sep, most = _SEPARATORS, normalizer.phone_max_length
    value = rf"{sep}(?:\+{sep}(?:[0-9]{sep}){{1,{most - 1}}}|(?:[0-9]{sep}){{1,{most}}})"
    return rf"^(?:{_BLANK}|{value})$" if blank else rf"^{value}$"


def identify_request_schema(normalizer: Normalizer) -> dict[str, Any]:
    """The JSON Schema of the POST /identify body, with this process's limits.

    `Normalizer` (one module for the worker, the API and the producer tools) parses the body; this
    schema documents exactly what it accepts, so clients and schemathesis can rely on it. Lengths
    count what is left after trimming (emails) or removing separators (phones), hence the patterns.
    """
    email_max, phone_max = normalizer.email_max_length, normalizer.phone_max_length
    email: dict[str, Any] = {
        "type": ["string", "null"],
        "pattern": email_pattern(normalizer, blank=True),
        "description": f"Trimmed and lowercased, then at most {email_max} characters, without NUL "
        "or lone surrogates. Null, empty or blank means absent.",
    }
    if normalizer.validate_email:
        email["format"] = "email"
    phone_string = {
        "type": "string",
        "maxLength": 4 * phone_max,
        "pattern": phone_pattern(normalizer, blank=True),
    }
    return {
        "title": "IdentifyRequest",
        "type": "object",
        "description": "At least one of `email` and `phoneNumber` must be present and not blank. "
        "Other properties are ignored.",
        "properties": {
            "email": email,
            "phoneNumber": {
                "description": "Digits with an optional leading `+`; spaces, dashes, dots and "
                f"parentheses are removed, leaving at most {phone_max} characters. A JSON integer "
                "is read as its decimal digits. Null, empty or blank means absent.",
                "anyOf": [
                    phone_string,
                    {"type": "integer", "minimum": 0, "maximum": 10**phone_max - 1},
                    {"type": "null"},
                ],
            },
        },
        "anyOf": [
            {"required": ["email"], "properties": {"email": {"type": "string", "pattern": _CHAR}}},
            {
                "required": ["phoneNumber"],
                "properties": {
                    "phoneNumber": {"anyOf": [{"type": "string", "pattern": "[0-9]"}, {"type": "integer"}]}
                },
            },
        ],
    }


@router.post(
    "/identify",
    operation_id="identify",
    summary="Reconcile an email and/or phone number into one customer identity",
    response_model=IdentifyResponse,
    responses={
        200: {
            "description": "The consolidated identity after applying the request.",
            "headers": {
                REPLAYED_HEADER: {
                    "description": "`true` when this is the stored answer to a retried Idempotency-Key.",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            },
            "links": {
                "GetContact": {
                    "operationId": "getContact",
                    "parameters": {"contact_id": "$response.body#/contact/primaryContactId"},
                    "description": "The same identity, later, by its primary contact id.",
                }
            },
        },
        **responses(400, 409, 413, 422, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IdentifyRequest"}}},
        },
        "parameters": [_IDEMPOTENCY_KEY_PARAMETER],
        "security": _IDENTIFY_ACCESS.security_requirement(),
    },
)
async def identify(call: Request) -> Response:
    # The hot route resolves its key, body and header itself, in the order dependencies would, and
    # documents them above: FastAPI's dependency resolution took a sixth of the CPU of a call
    # (docs/benchmarks.md, "Second wave, continued").
    client = await _IDENTIFY_ACCESS(call)
    identifiers = await identifiers_of(call)
    idempotency_key = idempotency_key_of(call)
    state = call.app.state
    request = Input(
        identifiers,
        source=state.settings.api_source,
        # Scoped per client: two clients' "order-42" are two calls. Names cannot hold a '/'.
        event_id=f"{client.name}/{idempotency_key}" if idempotency_key else str(uuid.uuid4()),
        occurred_at=None,
        publish_unchanged=False,
        # Without a key nobody can retry this call: no idempotency record to write.
        idempotent=idempotency_key is not None,
        keeps_answer=True,
    )
    resolution = await state.reconciler.reconcile(request)
    metrics.RECONCILIATIONS.labels("replayed" if resolution.duplicate else resolution.outcome.value).inc()
    if resolution.merge is not None and not resolution.duplicate:
        log.info(
            "clusters merged",
            surviving_primary_id=resolution.merge.surviving_primary_id,
            merged_primary_ids=list(resolution.merge.merged_primary_ids),
        )
    headers = {REPLAYED_HEADER: "true"} if resolution.duplicate else None
    return json_response(_contact_body(resolution.contact), headers=headers)


# FastAPI documents POST /identify (the decorator above); this plain Starlette route, which
# `create_app` puts before every other, serves it. FastAPI's request handling (the included router
# matched twice, the dependency solver run even with no dependencies) cost about 100 µs of a call's
# ~400 (docs/benchmarks.md, "Second wave, sixth pass"). Errors go through the same app-level handlers.
class _NamedRoute(Route):
    """Names itself in the scope, as FastAPI's routes do and FastAPI's router does not for a plain
    route: the request metrics label by it."""

    def matches(self, scope: types.Scope) -> tuple[Match, types.Scope]:
        match, child_scope = super().matches(scope)
        return match, {**child_scope, "route": self}


identify_route = _NamedRoute("/identify", identify, methods=["POST"])


@router.get(
    "/contacts/{contact_id}",
    operation_id="getContact",
    summary="The consolidated identity of the cluster holding a contact id",
    response_model=IdentifyResponse,
    responses=responses(404, 422, 503),
)
async def get_contact(
    contact_id: Annotated[int, Path(ge=1, le=MAX_CONTACT_ID, description="Any contact id of the cluster.")],
    client: ReadClient,
    database: DatabaseDep,
) -> Response:
    view = await database.run(partial(_read_contact, contact_id=contact_id, client=client))
    if view is None:
        raise ApiError(404, "contact_not_found", "no live contact has this id", "contact_id")
    return json_response(_contact_body(view))


@router.get(
    "/healthz", operation_id="healthz", summary="Liveness: the process answers", response_model=Status
)
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    operation_id="readyz",
    summary="Readiness: the database answers and every migration is applied",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready; `reason` says why."}},
)
async def readyz(database: DatabaseDep) -> Response:
    try:
        waiting = await database.run(_pending_versions, timeout=READY_TIMEOUT_S)
    except psycopg.Error:
        return _readiness("database unreachable", [])
    if waiting:
        return _readiness("migrations pending", waiting)
    return json_response({"status": "ready", "reason": None, "pendingMigrations": []})


@router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def get_metrics(database: DatabaseDep) -> Response:
    metrics.record_pool(database.pool)
    return Response(await anyio.to_thread.run_sync(metrics.render), media_type=metrics.CONTENT_TYPE)


def _contact_body(view: ContactView) -> dict[str, Any]:
    return {"contact": view.document()}


def _read_contact(conn: psycopg.Connection[Any], *, contact_id: int, client: Client) -> ContactView | None:
    with conn.transaction():
        view = contact_view(conn, contact_id)
        if view is not None:
            record_audit(conn, client, Action.CONTACT_READ, [view.primary_id, *view.secondary_ids])
    return view


def _pending_versions(conn: psycopg.Connection[Any]) -> list[str]:
    return [migration.version for migration in pending(conn)]


def _readiness(reason: str, waiting: list[str]) -> Response:
    return json_response({"status": "unavailable", "reason": reason, "pendingMigrations": waiting}, 503)
