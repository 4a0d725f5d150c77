"""The docs' configuration page lists every setting, and the README the two set-up commands CI relies on."""

from __future__ import annotations

from pathlib import Path

from consumer.config import Settings
from tests.support import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [name.upper() for name in Settings.model_fields if f"| `{name.upper()}` |" not in CONFIGURATION]
    assert not missing, f"docs/configuration.md lacks {missing}"
    assert "docs/configuration.md" in README


def test_every_docs_page_is_linked_from_the_readme() -> None:
    pages = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    assert {page for page in pages if f"({page})" not in README} == set()


def test_the_quickstart_commands_exist() -> None:
    root = Path(__file__).resolve().parent.parent
    assert "./scripts/dev.sh" in README
    assert (root / "scripts" / "dev.sh").exists()
    assert "./scripts/test.sh" in README
    assert (root / "scripts" / "test.sh").exists()
    assert "scripts/test.sh" in (root / ".ci" / "run").read_text()
