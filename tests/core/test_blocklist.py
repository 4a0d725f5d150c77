"""consumer/core/blocklist.py: the keyed hash that blocks and erasure records are matched by."""

from __future__ import annotations

from consumer.core.blocklist import value_hash


def test_value_hash_is_hmac_sha256_of_kind_and_value_as_stored() -> None:
    # Stored in blocked_value and erasure_request: the format must not change between versions.
    digest = value_hash("email", "doc@hillvalley.edu", b"identity-test-key")

    assert digest.hex() == "f3f1ca333db258eb7677ca6f21db4e627681e5faa27160e44c5646684abe34fd"
