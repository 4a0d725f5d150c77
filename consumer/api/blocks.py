"""The blocklist routes (DESIGN.md rules 12-16): review, add and remove blocked values."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Path, Query
from psycopg import Connection
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from consumer.api.auth import AdminClient
from consumer.api.deps import DatabaseDep, GuardDep, NormalizerDep
from consumer.api.errors import ApiError, responses
from consumer.api.responses import json_response
from consumer.api.routes import email_pattern, phone_pattern
from consumer.audit import Action, audited
from consumer.contract import ContactPayload, SplitData
from consumer.core.blocking import (
    BlockedValue,
    BlockRefused,
    BlockResult,
    block_value,
    list_blocks,
    unblock_value,
)
from consumer.core.events import split_document
from consumer.core.graph import ContactView, Merge
from consumer.core.links import values_of
from consumer.normalize import Normalizer

router = APIRouter(tags=["blocked values"])
Reason = Literal["operator", "fan_out", "identity_cap", "builtin"]
T = TypeVar("T")

MAX_BLOCK_ID = 2**63 - 1
_STATUS = {"already_blocked": 409, "not_found": 404, "over_identity_cap": 409}


class BlockRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Checked and normalized by `Normalizer`, as POST /identify's values are: left raw here.
    email: object = Field(
        None,
        description="The email to block (normalized as by POST /identify).",
        json_schema_extra={"type": ["string", "null"]},
    )
    phoneNumber: object = Field(
        None,
        description="The phone number to block; give one value, not both.",
        json_schema_extra={"type": ["string", "integer", "null"]},
    )
    reason: str | None = Field(
        None, max_length=500, pattern=r"^[^\x00]*$", description="Why, for the reviewers (free text)."
    )


class Block(BaseModel):
    id: int
    kind: Literal["email", "phone"]
    value: str | None = Field(description="The normalized value; null once it was erased (rule 17).")
    reason: Reason
    note: str | None = Field(description="The operator's reason, when one was given.")
    addedBy: str = Field(description="The API client or CLI that added it, or the rule (`rule:…`).")
    identityId: int | None = Field(description="Primary contact id of the identity it was found in.")
    createdAt: str
    removedAt: str | None
    removedBy: str | None


class BlockCreated(BaseModel):
    block: Block
    splits: list[SplitData] = Field(description="The identities the block divided (one per former identity).")


class BlockPage(BaseModel):
    items: list[Block]
    next: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class Remerged(BaseModel):
    survivingPrimaryId: int
    mergedPrimaryIds: list[int]
    contact: ContactPayload


class BlockRemoved(BaseModel):
    id: int
    merged: list[Remerged] = Field(description="The identities the unblock merged again (rule 16).")


@router.get(
    "/blocked-values",
    operation_id="listBlockedValues",
    summary="The blocklist, oldest first, paginated",
    response_model=BlockPage,
    responses=responses(422, 503),
)
async def get_blocked_values(
    client: AdminClient,
    database: DatabaseDep,
    reason: Annotated[
        Literal["operator", "fan_out", "identity_cap", "builtin"] | None,
        Query(description="Only this reason."),
    ] = None,
    after: Annotated[int, Query(ge=0, le=MAX_BLOCK_ID, description="The last id of the previous page.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    work = partial(list_blocks, reason=reason, after_id=after, limit=limit + 1)
    page = await database.run(
        audited(work, client, Action.BLOCKLIST_READ, lambda p: [b.id for b in p[:limit]])
    )
    more = len(page) > limit
    items = [_block(b) for b in page[:limit]]
    return json_response({"items": items, "next": page[limit - 1].id if more else None})


@router.post(
    "/blocked-values",
    operation_id="blockValue",
    summary="Block an email or a phone number, splitting the identities it linked",
    status_code=201,
    response_model=BlockCreated,
    responses=responses(400, 409, 422, 503),
)
async def post_blocked_value(
    client: AdminClient, body: BlockRequest, database: DatabaseDep, guard: GuardDep, normalizer: NormalizerDep
) -> Response:
    if {"email", "phoneNumber"} <= body.model_fields_set:
        raise ApiError(422, "one_value", "a block names one value: give `email` or `phoneNumber`, not both")
    ids = normalizer.identifiers(body.email, body.phoneNumber)
    ((kind, value),) = values_of(ids.email, ids.phone)
    work = partial(block_value, kind=kind, value=value, guard=guard, added_by=client.name, note=body.reason)
    result: BlockResult = await database.run(
        audited(_refusals(work), client, Action.BLOCK_ADD, lambda r: [r.block_id])
    )
    (block,) = await database.run(partial(list_blocks, after_id=result.block_id - 1, limit=1))
    splits = [split_document(s) for s in result.splits]
    return json_response({"block": _block(block), "splits": splits}, 201)


@router.delete(
    "/blocked-values/{block_id}",
    operation_id="unblockValue",
    summary="Remove a block, merging again the identities its value links",
    response_model=BlockRemoved,
    responses=responses(404, 409, 422, 503),
)
async def delete_blocked_value(
    client: AdminClient,
    block_id: Annotated[int, Path(ge=1, le=MAX_BLOCK_ID)],
    database: DatabaseDep,
    guard: GuardDep,
) -> Response:
    work = partial(unblock_value, block_id=block_id, guard=guard, removed_by=client.name)
    result = await database.run(audited(_refusals(work), client, Action.BLOCK_REMOVE, lambda r: [r.block_id]))
    return json_response({"id": block_id, "merged": [_remerged(m, view) for m, view in result.merges]})


def block_request_schema(normalizer: Normalizer) -> dict[str, Any]:
    """The JSON Schema of the POST /blocked-values body: exactly one value, as the API normalizes it."""
    return {
        "title": "BlockRequest",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "email": {
                "type": "string",
                "pattern": email_pattern(normalizer, blank=False),
                "description": "The email to block, normalized as by POST /identify.",
            },
            "phoneNumber": {
                "description": "The phone number to block, normalized as by POST /identify.",
                "anyOf": [
                    {
                        "type": "string",
                        "maxLength": 4 * normalizer.phone_max_length,
                        "pattern": phone_pattern(normalizer, blank=False),
                    },
                    {"type": "integer", "minimum": 0, "maximum": 10**normalizer.phone_max_length - 1},
                ],
            },
            "reason": {
                "type": ["string", "null"],
                "maxLength": 500,
                "pattern": r"^[^\x00]*$",
                "description": "Why, for the reviewers (free text).",
            },
        },
        "oneOf": [{"required": ["email"]}, {"required": ["phoneNumber"]}],
    }


def _refusals(work: Callable[[Connection[Any]], T]) -> Callable[[Connection[Any]], T]:
    """`work`, with the core's refusals turned into API errors."""

    def run(conn: Connection[Any]) -> T:
        try:
            return work(conn)
        except BlockRefused as exc:
            raise ApiError(_STATUS[exc.code], exc.code, str(exc)) from None

    return run


def _block(b: BlockedValue) -> dict[str, object]:
    return {
        "id": b.id,
        "kind": b.kind,
        "value": b.value,
        "reason": b.reason,
        "note": b.note,
        "addedBy": b.added_by,
        "identityId": b.identity_id,
        "createdAt": b.created_at.isoformat(),
        "removedAt": None if b.removed_at is None else b.removed_at.isoformat(),
        "removedBy": b.removed_by,
    }


def _remerged(merge: Merge, view: ContactView) -> dict[str, object]:
    return {
        "survivingPrimaryId": merge.surviving_primary_id,
        "mergedPrimaryIds": list(merge.merged_primary_ids),
        "contact": view.document(),
    }
