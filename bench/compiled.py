"""The compiled build (`IDENTITY_COMPILE=1`, setup.py) of this checkout, unpacked where a process imports it.

The wheel is the one the Docker image installs: `python -m bench.pipeline_bench --compiled` measures it,
and `tests/bench/test_compiled.py` runs the core's tests against it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def can_compile() -> bool:
    """True where the C compiler Python was built with is here (mypyc needs it)."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(compiler) is not None


def build(dest: Path) -> Path:
    """Build the compiled wheel of this checkout and unpack it under `dest`: the directory returned holds
    the `consumer` package as the image installs it (about a minute: mypyc type-checks, then gcc)."""
    wheels = dest / "wheel"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps"]
    subprocess.run(
        [*pip_wheel, "--wheel-dir", wheels, ROOT],
        env={**os.environ, "IDENTITY_COMPILE": "1", "PYTHONWARNINGS": "ignore"},
        check=True,
    )
    (wheel,) = wheels.glob("*.whl")
    site = dest / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def environment(site: Path) -> dict[str, str]:
    """The variables under which `python -m consumer …` (or pytest) imports the package from `site`, not
    from the checkout: `-m` would put the current directory first on the path. A wheel carries no
    migrations: they come from the checkout, as the image's come from /app/sql."""
    return {"PYTHONPATH": str(site), "PYTHONSAFEPATH": "1", "MIGRATIONS_DIR": str(ROOT / "sql")}
