"""The one place that turns raw emails and phone numbers into the values we match and store (rules 1-2).

The worker, the API and the producer tools all use it, so a key computed by a producer and a value
matched by the worker can never disagree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from consumer.config import Settings

_PHONE_SEPARATORS = re.compile(r"[\s\-.()]")
_PHONE_SHAPE = re.compile(r"\+?[0-9]+")


class IdentifierError(ValueError):
    """An identifier that cannot be used; `field` names it, `reason` is a short machine-readable code."""

    def __init__(self, field: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


class IdentifierTypeError(IdentifierError):
    """A value of the wrong JSON type (a boolean, an object, a fractional number)."""


class MissingIdentifiers(IdentifierError):
    """Neither an email nor a phone number is present."""

    def __init__(self) -> None:
        super().__init__(
            "email",
            "no_identifiers",
            "at least one of 'email' or 'phoneNumber' must be present and non-empty",
        )


@dataclass(frozen=True, slots=True)
class Identifiers:
    email: str | None
    phone: str | None

    @property
    def partition_key(self) -> str:
        """The Kafka message key: the normalized email if present, else the normalized phone."""
        key = self.email or self.phone
        assert key is not None, "Identifiers always holds at least one value"
        return key


@dataclass(frozen=True, slots=True)
class Normalizer:
    default_region: str | None = None
    email_max_length: int = 320
    phone_max_length: int = 32
    validate_email: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Normalizer:
        return cls(
            default_region=settings.default_phone_region,
            email_max_length=settings.email_max_length,
            phone_max_length=settings.phone_max_length,
            validate_email=settings.email_validation,
        )

    def email(self, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise IdentifierTypeError(
                "email", "invalid_type", f"email must be a string, got {_json_type(value)}"
            )
        email = value.strip().lower()
        if not email:
            return None
        if len(email) > self.email_max_length:
            raise IdentifierError(
                "email", "too_long", f"email is longer than {self.email_max_length} characters"
            )
        if not storable(email):
            raise IdentifierError(
                "email", "invalid_email", "email must not contain NUL or unpaired surrogate characters"
            )
        if self.validate_email:
            try:
                validate_email(email, check_deliverability=False)
            except EmailNotValidError:
                # The validator's own explanation may quote parts of the address: personal data.
                raise IdentifierError(
                    "email", "invalid_email", "email is not a syntactically valid address"
                ) from None
        return email

    def phone(self, value: object) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise IdentifierTypeError(
                "phoneNumber",
                "invalid_type",
                f"phoneNumber must be a string or an integer, got {_json_type(value)}",
            )
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                raise IdentifierTypeError(
                    "phoneNumber",
                    "invalid_type",
                    "phoneNumber must be a string or an integer, got a fraction",
                )
            value = int(value)
        if isinstance(value, int) and value < 0:
            raise IdentifierError("phoneNumber", "invalid_phone", "phoneNumber must not be negative")
        raw = str(value) if isinstance(value, int) else value.strip()
        if not raw:
            return None
        if len(raw) > 4 * self.phone_max_length:
            raise IdentifierError(
                "phoneNumber", "too_long", f"phoneNumber is longer than {self.phone_max_length} characters"
            )
        # Separators alone (say "-") are not "absent" (rule 1): they fail the shape check below.
        phone = _PHONE_SEPARATORS.sub("", raw)
        if len(phone) > self.phone_max_length:
            raise IdentifierError(
                "phoneNumber", "too_long", f"phoneNumber is longer than {self.phone_max_length} characters"
            )
        if not _PHONE_SHAPE.fullmatch(phone):
            raise IdentifierError(
                "phoneNumber",
                "invalid_phone",
                "phoneNumber may hold only digits, a leading '+', spaces, dashes, dots and parentheses",
            )
        return self._to_e164(phone)

    def identifiers(self, email: object, phone: object) -> Identifiers:
        """Both values normalized; raises `MissingIdentifiers` when neither is present."""
        ids = Identifiers(self.email(email), self.phone(phone))
        if ids.email is None and ids.phone is None:
            raise MissingIdentifiers()
        return ids

    def _to_e164(self, phone: str) -> str:
        if self.default_region is None:
            return phone
        try:
            parsed = phonenumbers.parse(phone, self.default_region)
        except phonenumbers.NumberParseException:
            return phone
        if not phonenumbers.is_possible_number(parsed):
            return phone
        return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def storable(text: str) -> bool:
    """PostgreSQL text cannot hold NUL, and a lone surrogate cannot be encoded as UTF-8."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__
