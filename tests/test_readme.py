"""The README documents every setting and the two set-up commands CI relies on."""

from __future__ import annotations

from pathlib import Path

from consumer.config import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [name.upper() for name in Settings.model_fields if f"| `{name.upper()}` |" not in README]
    assert not missing, f"README configuration table lacks {missing}"


def test_the_quickstart_commands_exist() -> None:
    root = Path(__file__).resolve().parent.parent
    assert "./scripts/dev.sh" in README
    assert (root / "scripts" / "dev.sh").exists()
    assert "./scripts/test.sh" in README
    assert (root / "scripts" / "test.sh").exists()
    assert "scripts/test.sh" in (root / ".ci" / "run").read_text()
