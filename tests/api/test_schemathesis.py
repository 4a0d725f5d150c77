"""Property-based checks of the running server against its own OpenAPI document (schemathesis).

Every check runs (`--checks all`): server errors, status codes, content types and headers as
documented, response bodies matching their schemas, schema-valid bodies accepted, schema-invalid ones
refused, and the identify -> getContact link followed in stateful scenarios. It runs the CLI, since
schemathesis' lazy pytest loader does not work with pytest 9.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ApiServer

MAX_EXAMPLES = 30
SEED = 20151021


# Blocks change what POST /identify accepts (an identifier blocked by a generated block is refused
# with 422 blocked_identifier, as documented): the blocklist's operations run on their own, after.
OPERATIONS = {
    "the others": ["--exclude-path-regex", "^/blocked-values"],
    "the blocklist": ["--include-path-regex", "^/blocked-values"],
}


@pytest.mark.parametrize("selection", list(OPERATIONS))
def test_api_conforms_to_its_openapi_document(api: ApiServer, tmp_path: Path, selection: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{api.url}/openapi.json",
            *OPERATIONS[selection],
            "--checks=all",
            f"--max-examples={MAX_EXAMPLES}",
            f"--seed={SEED}",
            f"--header=Authorization: Bearer {api.key}",
            "--request-timeout=10",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout
    assert "Unsupported regex" not in result.stdout, "schemathesis must use the documented patterns"
