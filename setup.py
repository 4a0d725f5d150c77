"""The package's build. With IDENTITY_COMPILE=1 it also compiles the reconciliation core with mypyc.

Compiled, a worker spends about a sixth less CPU per event (docs/benchmarks.md); the Docker image is
built so. mypyc type-checks what it compiles, so that build needs mypy and the runtime dependencies
installed beside it: `IDENTITY_COMPILE=1 pip wheel --no-build-isolation --no-deps .` in the dev venv.
A plain build, the editable install of development included, is the same code interpreted.
"""

import os
from glob import glob

from setuptools import setup

# The reconciliation core (plain functions over a connection: no Kafka, no HTTP) and its normalizer.
COMPILED = sorted(glob("consumer/core/*.py")) + ["consumer/normalize.py"]

if os.environ.get("IDENTITY_COMPILE") == "1":
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(COMPILED, opt_level="3"))
else:
    setup()
