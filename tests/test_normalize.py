"""Rules 1-2: what counts as absent, what is a type error, and the values we match and store."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.normalize import (
    IdentifierError,
    Identifiers,
    IdentifierTypeError,
    MissingIdentifiers,
    Normalizer,
)

DEFAULT = Normalizer()

digits = st.text("0123456789", min_size=1, max_size=15)
separators = st.text(" -.()\t", max_size=3)
local_parts = st.text("abcdefghijklmnopqrstuvwxyz0123456789._+-", min_size=1, max_size=20)
domains = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,2}\.[a-z]{2,6}", fullmatch=True)
emails = st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains)
blank = st.text(" \t\r\n\u00a0\u2003", max_size=5)


# --- absent values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", " ", "\t\n", "\u00a0\u2003"])
def test_null_empty_and_whitespace_email_is_absent(value: object) -> None:
    assert DEFAULT.email(value) is None


@pytest.mark.parametrize("value", [None, "", " ", "\t\n", "\u2003", " " * 500])
def test_null_empty_and_whitespace_phone_is_absent(value: object) -> None:
    assert DEFAULT.phone(value) is None


@pytest.mark.parametrize("value", ["-", "()", " ( ) - . ", "+"])
def test_phone_of_separators_only_is_invalid_not_absent(value: str) -> None:
    # Only null, empty and whitespace mean "absent" (rule 1); punctuation alone is a broken value.
    with pytest.raises(IdentifierError) as info:
        DEFAULT.phone(value)
    assert info.value.reason == "invalid_phone"


@pytest.mark.parametrize(
    ("email", "phone"), [(None, None), ("", ""), ("   ", None), (None, " \t "), ("\n", "")]
)
def test_neither_identifier_present_is_rejected(email: object, phone: object) -> None:
    with pytest.raises(MissingIdentifiers) as info:
        DEFAULT.identifiers(email, phone)
    assert info.value.reason == "no_identifiers"
    assert "email" in str(info.value)
    assert "phoneNumber" in str(info.value)
    assert isinstance(info.value, IdentifierError)
    assert isinstance(info.value, ValueError)


@given(blank, emails)
def test_one_identifier_is_enough(nothing: str, email: str) -> None:
    assert DEFAULT.identifiers(email, nothing) == Identifiers(email, None)
    assert DEFAULT.identifiers(nothing or None, "123456") == Identifiers(None, "123456")


# --- email ------------------------------------------------------------------------------------------


def test_email_is_trimmed_and_lowercased() -> None:
    assert DEFAULT.email("  Lorraine@HillValley.EDU \n") == "lorraine@hillvalley.edu"


@given(emails, blank, blank, st.lists(st.booleans(), max_size=40))
def test_email_case_and_surrounding_whitespace_do_not_matter(
    email: str, before: str, after: str, upper: list[bool]
) -> None:
    varied = "".join(c.upper() if i < len(upper) and upper[i] else c for i, c in enumerate(email))
    assert DEFAULT.email(before + varied + after) == email


# NUL and lone surrogates are refused (test_email_postgresql_cannot_store_is_refused).
@given(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=50))
def test_email_normalization_is_idempotent(value: str) -> None:
    normalized = DEFAULT.email(value)
    assert normalized is None or DEFAULT.email(normalized) == normalized


@pytest.mark.parametrize("value", ["a\x00@b.c", "a\udc80@b.c"])
def test_email_postgresql_cannot_store_is_refused(value: str) -> None:
    with pytest.raises(IdentifierError) as info:
        DEFAULT.email(value)
    assert (info.value.field, info.value.reason) == ("email", "invalid_email")


@pytest.mark.parametrize("value", [12345, 1.5, True, {"a": 1}, ["a@b.c"]])
def test_email_of_the_wrong_type_is_a_type_error(value: object) -> None:
    with pytest.raises(IdentifierTypeError) as info:
        DEFAULT.email(value)
    assert (info.value.field, info.value.reason) == ("email", "invalid_type")


def test_email_length_limit() -> None:
    short = Normalizer(email_max_length=10)
    assert short.email("  abc@de.fg  ") == "abc@de.fg"
    assert short.email("abcd@ef.gh") == "abcd@ef.gh"
    with pytest.raises(IdentifierError) as info:
        short.email("abcde@fg.hi")
    assert (info.value.field, info.value.reason) == ("email", "too_long")
    assert "abcde" not in str(info.value)


def test_email_is_not_validated_by_default() -> None:
    assert DEFAULT.email("not an address") == "not an address"


@pytest.mark.parametrize("value", ["no-at-sign", "a b@c.com", "a@@b.com", "x@localhost", "@b.com", "a@"])
def test_invalid_email_is_rejected_when_validation_is_on(value: str) -> None:
    with pytest.raises(IdentifierError) as info:
        Normalizer(validate_email=True).email(value)
    assert (info.value.field, info.value.reason) == ("email", "invalid_email")
    assert not isinstance(info.value, IdentifierTypeError)


@given(emails)
def test_valid_email_passes_validation_unchanged(email: str) -> None:
    # Validation checks the address; it never rewrites what we store.
    try:
        stored = Normalizer(validate_email=True).email(email.upper())
    except IdentifierError as exc:
        reason = exc.reason
    else:
        assert stored == email
        return
    assert reason == "invalid_email"  # e.g. a local part with consecutive dots


@given(st.text(min_size=3, max_size=20), st.text(min_size=3, max_size=20))
def test_invalid_email_message_never_holds_the_address(local: str, domain: str) -> None:
    # The message goes to dead-letter headers and HTTP responses, which must carry no personal data.
    address = f"{local}@{domain}"
    try:
        Normalizer(validate_email=True).email(address)
    except IdentifierError as exc:
        message = str(exc)
    else:
        return
    assert message in {
        "email is not a syntactically valid address",
        "email must not contain NUL or unpaired surrogate characters",
    }


# --- phone ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("123456", "123456"),
        (" 123456 ", "123456"),
        ("123-456", "123456"),
        ("(123) 456", "123456"),
        ("123.456", "123456"),
        ("+1 (555) 010-0100", "+15550100100"),
        ("+15550100", "+15550100"),
        ("15550100", "15550100"),
        ("0044 20 7183 8750", "00442071838750"),
    ],
)
def test_phone_separators_are_stripped_keeping_a_leading_plus(raw: str, expected: str) -> None:
    assert DEFAULT.phone(raw) == expected


def test_plus_prefixed_and_bare_numbers_are_different_phones_by_default() -> None:
    assert DEFAULT.phone("+15550100") != DEFAULT.phone("15550100")


@given(st.lists(st.tuples(digits, separators), min_size=1, max_size=2), st.booleans())
def test_phone_formatting_does_not_matter(groups: list[tuple[str, str]], plus: bool) -> None:
    bare = "".join(d for d, _ in groups)
    formatted = "".join(d + sep for d, sep in groups)
    prefix = "+" if plus else ""
    assert DEFAULT.phone(prefix + formatted) == prefix + bare


@given(st.text(max_size=40))
def test_phone_normalization_is_idempotent_and_only_digits(value: str) -> None:
    try:
        normalized, reason = DEFAULT.phone(value), None
    except IdentifierError as exc:
        normalized, reason = None, exc.reason
    assert reason in {None, "invalid_phone", "too_long"}
    if normalized is not None:
        assert normalized.lstrip("+").isascii()
        assert normalized.lstrip("+").isdigit()
        assert DEFAULT.phone(normalized) == normalized


@pytest.mark.parametrize("raw", ["12a456", "phone", "1+23456", "++123456", "+", "123_456", "12/34", "١٢٣"])
def test_phone_with_invalid_characters_is_rejected(raw: str) -> None:
    with pytest.raises(IdentifierError) as info:
        DEFAULT.phone(raw)
    assert (info.value.field, info.value.reason) == ("phoneNumber", "invalid_phone")
    assert not isinstance(info.value, IdentifierTypeError)


def test_phone_length_limit_counts_digits_not_separators() -> None:
    short = Normalizer(phone_max_length=6)
    assert short.phone("(12) 34-56") == "123456"
    with pytest.raises(IdentifierError) as info:
        short.phone("1234567")
    assert (info.value.field, info.value.reason) == ("phoneNumber", "too_long")


def test_absurdly_long_phone_is_rejected_before_stripping() -> None:
    with pytest.raises(IdentifierError) as info:
        DEFAULT.phone("1" + "-" * 10_000 + "1")
    assert info.value.reason == "too_long"


# --- numeric phone ----------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=10**15))
def test_numeric_phone_equals_its_decimal_string(number: int) -> None:
    assert DEFAULT.phone(number) == DEFAULT.phone(str(number)) == str(number)


@given(st.integers(min_value=0, max_value=2**53))
def test_integral_float_phone_is_accepted(number: int) -> None:
    assert DEFAULT.phone(float(number)) == str(number)


@pytest.mark.parametrize("value", [123456.5, 0.1, -0.5, float("nan"), float("inf"), float("-inf")])
def test_fractional_phone_is_a_type_error(value: float) -> None:
    with pytest.raises(IdentifierTypeError) as info:
        DEFAULT.phone(value)
    assert (info.value.field, info.value.reason) == ("phoneNumber", "invalid_type")


@pytest.mark.parametrize("value", [True, False, {"number": "123456"}, {}, ["123456"], [], (1, 2), object()])
def test_boolean_object_and_list_phones_are_type_errors(value: object) -> None:
    with pytest.raises(IdentifierTypeError) as info:
        DEFAULT.phone(value)
    assert (info.value.field, info.value.reason) == ("phoneNumber", "invalid_type")


def test_type_error_is_not_confused_with_absence() -> None:
    with pytest.raises(IdentifierTypeError):
        DEFAULT.identifiers("a@b.c", False)
    with pytest.raises(IdentifierTypeError):
        DEFAULT.identifiers(None, {})


def test_negative_numeric_phone_is_rejected() -> None:
    with pytest.raises(IdentifierError) as info:
        DEFAULT.phone(-123456)
    assert info.value.reason == "invalid_phone"


# --- default region ---------------------------------------------------------------------------------


def test_default_region_turns_possible_numbers_into_e164() -> None:
    us = Normalizer(default_region="US")
    assert us.phone("(415) 555-0100") == "+14155550100"
    assert us.phone(4155550100) == "+14155550100"
    assert us.phone("+1 415 555 0100") == "+14155550100"
    assert us.phone("+44 20 7183 8750") == "+442071838750"
    assert Normalizer(default_region="GB").phone("020 7183 8750") == "+442071838750"


def test_default_region_leaves_impossible_numbers_as_stripped() -> None:
    assert Normalizer(default_region="US").phone("123456") == "123456"
    assert Normalizer(default_region="US").phone("12") == "12"


def test_no_default_region_means_no_e164() -> None:
    assert DEFAULT.phone("(415) 555-0100") == "4155550100"


@given(digits, st.sampled_from(["US", "GB", "DE", "IN"]))
def test_region_normalization_is_idempotent(number: str, region: str) -> None:
    normalizer = Normalizer(default_region=region)
    once = normalizer.phone(number)
    assert once is not None
    assert normalizer.phone(once) == once


# --- partition key ----------------------------------------------------------------------------------


def test_partition_key_is_the_email_else_the_phone() -> None:
    assert DEFAULT.identifiers(" A@B.C ", "123456").partition_key == "a@b.c"
    assert DEFAULT.identifiers(None, "(123) 456").partition_key == "123456"
    assert DEFAULT.identifiers("", 123456).partition_key == "123456"


@given(emails, digits)
def test_partition_key_is_the_same_for_every_spelling(email: str, phone: str) -> None:
    assert DEFAULT.identifiers(f" {email.upper()} ", phone).partition_key == email
    assert DEFAULT.identifiers("  ", f"({phone})").partition_key == phone
