from __future__ import annotations

from tests.reliability.conftest import stack  # noqa: F401  (worker and relay processes of one test)
