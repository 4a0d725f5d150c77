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
