"""Output event ids: consumers de-duplicate by them, so they must never change between releases."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from consumer.contract import MERGED_TYPE, RESOLVED_TYPE
from consumer.core.events import output_event_id

NAMESPACE = uuid.UUID("6f1c3c56-8d0e-4e8b-9a59-7f2ad3c1b0e4")


def test_an_output_event_id_is_the_same_as_in_earlier_releases() -> None:
    assert output_event_id("urn:shop", "e1", RESOLVED_TYPE) == "17ce8fc7-0578-5fbe-b945-46aef997c1d0"


@given(source=st.text(min_size=1), event_id=st.text(min_size=1), merged=st.booleans())
def test_output_event_ids_are_the_standard_uuid5_of_the_source_event_and_type(
    source: str, event_id: str, merged: bool
) -> None:
    event_type = MERGED_TYPE if merged else RESOLVED_TYPE
    expected = uuid.uuid5(NAMESPACE, f"{source}\x1f{event_id}\x1f{event_type}")
    assert output_event_id(source, event_id, event_type) == str(expected)
