"""The event and HTTP contract as pydantic models (DESIGN.md, "Kafka contract" and rule 9).

These models are the source of the JSON Schema files in `docs/schemas/`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from cloudevents.core.bindings.kafka import KafkaMessage, to_structured_event
from cloudevents.core.v1.event import CloudEvent as _CloudEvent
from pydantic import BaseModel, ConfigDict, Field

from consumer.normalize import Normalizer

RESOLVED_TYPE = "identity.resolved"
MERGED_TYPE = "identity.merged"
SPLIT_TYPE = "identity.split"
ERASED_TYPE = "identity.erased"
CHECKOUT_TYPE = "checkout.completed"


class Outcome(StrEnum):
    CREATED_PRIMARY = "created_primary"
    CREATED_SECONDARY = "created_secondary"
    MATCHED = "matched"
    MERGED = "merged"


class ContactPayload(BaseModel):
    """The consolidated identity of one customer (rule 9)."""

    primaryContatctId: int = Field(description="The primary contact id, in the original spec's spelling.")
    primaryContactId: int
    emails: list[str] = Field(description="The primary's email first, the rest oldest first; no duplicates.")
    phoneNumbers: list[str] = Field(description="The primary's phone first, the rest oldest first.")
    secondaryContactIds: list[int] = Field(description="Oldest first, by (created_at, id).")


class IdentifyResponse(BaseModel):
    contact: ContactPayload


class CheckoutData(BaseModel):
    """`data` of a `checkout.completed` event. Values are checked and normalized by `Normalizer`."""

    model_config = ConfigDict(extra="allow")

    email: object = Field(None, json_schema_extra={"type": ["string", "null"]})
    phoneNumber: object = Field(None, json_schema_extra={"type": ["string", "integer", "null"]})
    orderId: str | int | None = None


class ResolvedData(BaseModel):
    sourceEventId: str
    sourceEventSource: str
    outcome: Outcome
    contactId: int | None = Field(description="The id of the row this event created, or null.")
    contact: ContactPayload


class MergedData(BaseModel):
    sourceEventId: str
    survivingPrimaryId: int
    mergedPrimaryIds: list[int] = Field(description="The primaries demoted to secondaries.")
    relinkedContactIds: list[int] = Field(description="The former secondaries of the demoted primaries.")
    contact: ContactPayload


class SplitCause(BaseModel):
    type: Literal["value_blocked", "erasure"] = Field(
        description="What divided the identity: a value blocked (rules 12-14), or an erasure (rule 17)."
    )
    id: int = Field(description="The block's id (GET /blocked-values), or the erasure request's id.")


class SplitData(BaseModel):
    cause: SplitCause
    formerPrimaryId: int = Field(description="The primary contact id of the identity before the split.")
    identities: list[ContactPayload] = Field(
        description="The identities it became, oldest primary first; one keeps formerPrimaryId."
    )


class ErasedData(BaseModel):
    """Rows deleted by an erasure request (rule 17): ids only, no personal data."""

    erasureRequestId: int = Field(description="The erasure request's id (POST /erasure-requests).")
    formerPrimaryId: int = Field(description="The primary contact id of the identity the rows belonged to.")
    erasedContactIds: list[int] = Field(description="The deleted rows of that identity, ascending.")


class ErasureResponse(BaseModel):
    """The answer to POST /erasure-requests (rule 17)."""

    erasureRequestId: int | None = Field(description="Its id in the erasure log; null on a dry run.")
    erasedContactIds: list[int] = Field(description="Every row deleted, ascending; empty if none held it.")
    identities: list[ContactPayload] = Field(
        description="What the affected identities' remaining rows became, as announced by identity.split."
    )


class LinkPayload(BaseModel):
    kind: Literal["email", "phone", "merge"] = Field(
        description="A shared email, a shared phone, or a recorded merge of an email with a phone (rule 7)."
    )
    email: str | None
    phoneNumber: str | None


class RowLink(LinkPayload):
    to: int = Field(description="The row this one hangs from in the spanning tree from the primary.")


class ExplainedRow(BaseModel):
    id: int
    email: str | None
    phoneNumber: str | None
    linkPrecedence: Literal["primary", "secondary"]
    linkedId: int | None
    createdAt: datetime
    updatedAt: datetime
    source: str = Field(description="Provenance: the source of the event or the API that created the row.")
    sourceEventId: str = Field(description="Provenance: the event id or the API call's Idempotency-Key.")
    link: RowLink | None = Field(description="The value linking it to the tree; null for the primary.")


class BlockedHeld(BaseModel):
    kind: Literal["email", "phone"]
    value: str
    blockId: int | None = Field(description="The block (GET /blocked-values), or null for a junk pattern.")
    reason: str = Field(description="The block's reason, or `pattern` for the shipped junk patterns.")
    contactIds: list[int] = Field(description="The rows of this identity holding the value.")


class PathStep(BaseModel):
    from_: int = Field(alias="from")
    to: int
    link: LinkPayload


class ExplainPath(BaseModel):
    from_: int = Field(alias="from")
    to: int
    steps: list[PathStep] = Field(description="Consecutive rows sharing a non-blocked value.")


class ExplainResponse(BaseModel):
    """GET /contacts/{id}/explain (rule 18)."""

    contactId: int
    contact: ContactPayload
    rows: list[ExplainedRow] = Field(description="The identity's rows, primary first, then oldest first.")
    blockedValues: list[BlockedHeld] = Field(description="Blocked values the rows hold (they link nothing).")
    history: list[dict[str, object]] = Field(
        description="Merges, splits, blocks, unblocks and erasures that touched the identity, oldest first."
    )
    historyNext: str | None = Field(description="Cursor of the next history page (`historyAfter`), or null.")
    path: ExplainPath | None = Field(description="With `?to=`: the chain of shared values between the rows.")


DataT = TypeVar("DataT")


class CloudEvent(BaseModel, Generic[DataT]):
    """A CloudEvents 1.0 envelope in structured JSON mode."""

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    time: datetime | None = None
    subject: str | None = None
    datacontenttype: str = "application/json"
    data: DataT


def checkout_message(
    normalizer: Normalizer,
    email: str | None,
    phone: str | int | None,
    *,
    event_id: str,
    source: str,
    order_id: str | int | None = None,
    time: datetime | None = None,
) -> KafkaMessage:
    """A `checkout.completed` event as a Kafka message: structured-mode CloudEvent (time in UTC,
    default now), keyed by the normalized email, else phone; raises `IdentifierError` if neither is usable."""
    key = normalizer.identifiers(email, phone).partition_key
    data: dict[str, Any] = {"email": email, "phoneNumber": phone, "orderId": order_id}
    event = _CloudEvent(
        {
            "id": event_id,
            "source": source,
            "type": CHECKOUT_TYPE,
            "time": (time or datetime.now(UTC)).astimezone(UTC),
            "datacontenttype": "application/json",
        },
        data,
    )
    return to_structured_event(event, key_mapper=lambda _: key)
