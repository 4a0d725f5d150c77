"""JSON Schemas of the event and HTTP contract, generated from `consumer.contract` into `docs/schemas/`.

`python -m consumer.schemas` rewrites the files; `--check` only reports drift (exit 1), for CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from consumer.contract import (
    CHECKOUT_TYPE,
    ERASED_TYPE,
    MERGED_TYPE,
    RESOLVED_TYPE,
    SPLIT_TYPE,
    CheckoutData,
    CloudEvent,
    ErasedData,
    IdentifyResponse,
    MergedData,
    ResolvedData,
    SplitData,
)

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema."""
    return {
        f"{CHECKOUT_TYPE}.json": _event(
            CHECKOUT_TYPE,
            CheckoutData,
            "validation",
            "Input on the checkout topic, in CloudEvents structured JSON mode (binary mode with ce_* "
            "headers carries the same attributes). (source, id) is the idempotency key.",
        ),
        f"{RESOLVED_TYPE}.json": _event(
            RESOLVED_TYPE,
            ResolvedData,
            "serialization",
            "One per processed checkout event, and per API call that changed data; keyed by the primary id.",
        ),
        f"{MERGED_TYPE}.json": _event(
            MERGED_TYPE,
            MergedData,
            "serialization",
            "One whenever a primary contact is demoted to secondary; keyed by the surviving primary id.",
        ),
        f"{SPLIT_TYPE}.json": _event(
            SPLIT_TYPE,
            SplitData,
            "serialization",
            "One per identity divided by a blocked value, and per identity an erasure took rows from "
            "(rule 15); keyed by the former primary id.",
        ),
        f"{ERASED_TYPE}.json": _event(
            ERASED_TYPE,
            ErasedData,
            "serialization",
            "One per identity an erasure request deleted rows of (ids only, no personal data); keyed by "
            "the former primary id, followed by the identity.split saying what remains.",
        ),
        "identify-response.json": _document(
            "identify-response.json",
            IdentifyResponse.model_json_schema(mode="serialization"),
            "The body of a 200 answer to POST /identify.",
        ),
    }


def render() -> dict[str, str]:
    return {
        name: json.dumps(schema, indent=2, ensure_ascii=False) + "\n" for name, schema in schemas().items()
    }


def drift(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the schema files that are missing or differ from what the models generate."""
    return [
        name
        for name, text in render().items()
        if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text
    ]


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (directory / name).write_text(text, encoding="utf-8")
    return sorted(render())


def _event(
    event_type: str,
    data: type[BaseModel],
    mode: Literal["validation", "serialization"],
    description: str,
) -> dict[str, Any]:
    schema = CloudEvent[data].model_json_schema(mode=mode)  # type: ignore[valid-type]
    schema["title"] = f"{event_type} event"
    schema["properties"]["type"] = {"const": event_type, "title": "Type", "type": "string"}
    # CloudEvents requires specversion; the model only defaults it when building our own events.
    schema["required"] = ["specversion", *schema["required"]]
    return _document(f"{event_type}.json", schema, description)


def _document(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"$schema": DIALECT, "$id": name, **schema, "description": description}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consumer.schemas", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the files differ, write nothing")
    parser.add_argument(
        "--dir", type=Path, default=SCHEMA_DIR, help="output directory (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = drift(args.dir)
        for name in stale:
            print(f"stale: {args.dir / name} (run python -m consumer.schemas)")
        return 1 if stale else 0
    for name in write(args.dir):
        print(f"wrote {args.dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
