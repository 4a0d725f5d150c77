"""Explanation and erasure routes (DESIGN.md rules 17-18; docs/explain.md, docs/erasure.md)."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from consumer.api.deps import DatabaseDep, OneIdentifierBody, SettingsDep
from consumer.api.errors import ApiError, responses
from consumer.api.responses import json_response
from consumer.contract import ErasureResponse, ExplainResponse
from consumer.core import Guardrails
from consumer.core.erasure import erase
from consumer.core.explain import CURSOR_PATTERN, BadCursor, NotInIdentity, explain

log = structlog.get_logger(__name__)
router = APIRouter()

MAX_CONTACT_ID = 2**63 - 1
ContactId = Annotated[int, Path(ge=1, le=MAX_CONTACT_ID, description="Any live contact id of the identity.")]


def erasure_request_schema(identify: dict[str, Any]) -> dict[str, Any]:
    """The POST /erasure-requests body: the /identify body's values, exactly one of them present."""
    schema = {key: value for key, value in identify.items() if key != "anyOf"}
    return {
        **schema,
        "title": "ErasureRequest",
        "description": "Exactly one of `email` and `phoneNumber`, present and not blank; normalized as by "
        "POST /identify. Other properties are ignored.",
        "oneOf": identify["anyOf"],
    }


@router.get(
    "/contacts/{contact_id}/explain",
    operation_id="explainContact",
    summary="Why the contacts of an identity are one customer: rows, links, blocked values, history",
    response_model=ExplainResponse,
    response_model_by_alias=True,
    responses=responses(404, 409, 422, 503),
)
async def explain_contact(
    contact_id: ContactId,
    database: DatabaseDep,
    settings: SettingsDep,
    to: Annotated[
        int | None,
        Query(ge=1, le=MAX_CONTACT_ID, description="Another row of the identity: adds the path to it."),
    ] = None,
    history_after: Annotated[
        str | None,
        Query(
            alias="historyAfter",
            pattern=f"^{CURSOR_PATTERN}$",
            description="`historyNext` of the previous page.",
        ),
    ] = None,
) -> Response:
    work = partial(
        explain, contact_id=contact_id, to=to, guard=Guardrails.of(settings), history_after=history_after
    )
    try:
        document = await database.run(work)
    except NotInIdentity:
        # The request is well formed; the graph, as it is now, has no such path.
        message = "`to` is not a live contact of the same identity"
        raise ApiError(409, "not_same_identity", message, "to") from None
    except BadCursor:
        message = "historyAfter is not a cursor from this API"
        raise ApiError(422, "invalid_cursor", message, "historyAfter") from None
    if document is None:
        raise ApiError(404, "contact_not_found", "no live contact has this id", "contact_id")
    return json_response(document)


@router.post(
    "/erasure-requests",
    operation_id="eraseValue",
    summary="Erase an email or a phone number everywhere (right to be forgotten)",
    response_model=ErasureResponse,
    responses=responses(400, 413, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErasureRequest"}}},
        }
    },
)
async def erasure_request(
    value: OneIdentifierBody,
    database: DatabaseDep,
    settings: SettingsDep,
    dry_run: Annotated[
        bool, Query(alias="dryRun", description="Answer what the erasure would do, and change nothing.")
    ] = False,
) -> Response:
    kind, normalized = value
    work = partial(
        erase,
        kind=kind,
        value=normalized,
        requested_by="api",
        guard=Guardrails.of(settings),
        dry_run=dry_run,
    )
    erasure = await database.run(work)
    if not dry_run:
        log.info(
            "value erased",
            kind=kind,
            erasure_request_id=erasure.request_id,
            erased_contact_ids=list(erasure.erased_contact_ids),
        )
    return json_response(erasure.document())
