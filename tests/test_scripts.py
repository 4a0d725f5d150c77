"""scripts/ and the Makefile: the local stack installs no test tools; every declared target has a rule."""

from __future__ import annotations

import re
import tomllib

from tests.support import ROOT


def test_dev_installs_the_runtime_and_the_embedded_extra_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    embedded = " ".join(project["optional-dependencies"]["embedded"])
    runtime = " ".join(project["dependencies"])
    # httpx is no test tool here: the console's pipeline page scrapes the worker's metrics with it.
    for tool in ("pytest", "hypothesis", "testcontainers", "schemathesis", "ruff", "mypy"):
        assert tool not in embedded
        assert tool not in runtime
    assert "EXTRAS=embedded source" in (ROOT / "scripts" / "dev.sh").read_text()
    assert "EXTRAS=dev source" in (ROOT / "scripts" / "test.sh").read_text()


def test_every_phony_make_target_has_a_rule() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (phony,) = re.findall(r"^\.PHONY:(.*)$", makefile, re.M)
    rules = set(re.findall(r"^([a-z]+):", makefile, re.M))
    assert set(phony.split()) == rules
    assert {"lint", "format", "typecheck", "bench", "test", "dev"} <= rules
