"""The settings tables of README.md and docs/, generated from the descriptions in `consumer.config`.

A table sits between `<!-- settings: PATTERN ... -->` and `<!-- /settings -->`; it lists the settings
whose variable name matches one of the shell-style patterns (`*` for all, `RELAY_*`), in the order
`Settings` declares them. `python -m consumer.settings_doc` rewrites the tables; `--check` only reports
drift (exit 1), for CI.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path

from pydantic.fields import FieldInfo

from consumer.config import Settings

ROOT = Path(__file__).resolve().parent.parent
_TABLE = re.compile(r"(<!-- settings: (?P<patterns>[^>]*?) -->\n)(?P<table>.*?)(<!-- /settings -->)", re.S)


def documents(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def table(patterns: Sequence[str]) -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        variable = name.upper()
        if any(fnmatchcase(variable, pattern) for pattern in patterns):
            lines.append(f"| `{variable}` | {_default(field)} | {field.description} |")
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    return _TABLE.sub(lambda m: m[1] + table(m["patterns"].split()) + m[4], text)


def drift(root: Path = ROOT) -> list[Path]:
    """Documents whose tables differ from what the settings generate."""
    return [path for path in documents(root) if render(text := path.read_text()) != text]


def _default(field: FieldInfo) -> str:
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consumer.settings_doc", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a table differs, write nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout (default: %(default)s)")
    args = parser.parse_args(argv)
    stale = drift(args.root)
    for path in stale:
        if args.check:
            print(f"stale: {path} (run python -m consumer.settings_doc)")
        else:
            path.write_text(render(path.read_text()))
            print(f"wrote {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
