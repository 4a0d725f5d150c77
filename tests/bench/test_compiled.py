"""The compiled build (bench/compiled.py): the core's own tests, run against the wheel the image installs.

mypyc keeps Python's semantics for code that type-checks, with exceptions (a name keeps the type of its
first binding; an interpreted class cannot subclass a compiled one): these tests are what finds them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import psycopg
import pytest

from bench import compiled
from tests.support import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not compiled.can_compile(), reason="no C compiler here: mypyc cannot build the core"),
]

CORE = sorted(p.stem for p in (ROOT / "consumer" / "core").glob("*.py") if p.stem != "__init__")
COMPILED_MODULES = ["consumer.normalize", "consumer.core", *(f"consumer.core.{name}" for name in CORE)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compiled.build(tmp_path_factory.mktemp("compiled"))


def python(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env={**os.environ, **compiled.environment(site), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_core_is_imported_compiled_from_the_wheel(site: Path) -> None:
    show = "import importlib, sys\nfor m in sys.argv[1:]: print(importlib.import_module(m).__spec__.origin)"
    result = python(site, "-c", show, *COMPILED_MODULES)
    assert result.returncode == 0, result.stderr
    origins = result.stdout.split()
    assert len(origins) == len(COMPILED_MODULES)
    for name, origin in zip(COMPILED_MODULES, origins, strict=True):
        assert origin.startswith(str(site)), f"{name} came from {origin}, not the wheel"
        assert origin.endswith(tuple(EXTENSION_SUFFIXES)), f"{name} is not compiled: {origin}"


def test_the_core_tests_pass_against_the_compiled_core(site: Path, database_url: str, tmp_path: Path) -> None:
    # The checkout goes last on the path (for `tests`), after the wheel: `consumer` comes from the wheel.
    # A base directory of its own: pytest makes its default one's parent private (0700), which would
    # lock this run's embedded PostgreSQL, a user of its own, out of its data directory.
    args = ["-m", "pytest", "tests/core", "tests/test_normalize.py", "-q", "-p", "no:cacheprovider"]
    args += ["--import-mode=append", "--basetemp", str(tmp_path / "basetemp")]
    result = python(site, *args, DATABASE_URL=database_url)
    assert result.returncode == 0, result.stdout[-6000:]
    with psycopg.connect(database_url) as conn:  # the server the rest of this run uses still answers
        assert conn.execute("SELECT 1").fetchone() == (1,)
