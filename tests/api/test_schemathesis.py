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

from tests.support.processes import ApiServer

MAX_EXAMPLES = 30
SEED = 20151021


def test_api_conforms_to_its_openapi_document(api: ApiServer, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{api.url}/openapi.json",
            "--checks=all",
            f"--max-examples={MAX_EXAMPLES}",
            f"--seed={SEED}",
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
