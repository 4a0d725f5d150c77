"""The settings tables in README.md and docs/ are what `consumer.config`'s descriptions generate."""

from __future__ import annotations

import shutil
from pathlib import Path

from consumer import settings_doc
from consumer.config import Settings


def test_checked_in_tables_match_the_settings() -> None:
    assert settings_doc.drift() == [], "run `python -m consumer.settings_doc` and commit the tables"
    assert settings_doc.main(["--check"]) == 0


def test_every_setting_is_described_and_in_the_full_table() -> None:
    readme = (settings_doc.ROOT / "README.md").read_text() + "".join(
        p.read_text() for p in (settings_doc.ROOT / "docs").glob("*.md")
    )
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
        assert f"| `{name.upper()}` |" in readme


def test_check_reports_a_stale_table_and_the_rewrite_fixes_it(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    shutil.copy(settings_doc.ROOT / "README.md", tmp_path / "README.md")
    page = tmp_path / "docs" / "page.md"
    page.write_text("# Page\n\n<!-- settings: RELAY_* -->\n| stale |\n<!-- /settings -->\n")

    assert settings_doc.main(["--check", "--root", str(tmp_path)]) == 1
    assert settings_doc.drift(tmp_path) == [page]
    assert settings_doc.main(["--root", str(tmp_path)]) == 0
    assert settings_doc.drift(tmp_path) == []
    assert "| `RELAY_BATCH_SIZE` | `1000` | events per publishing round" in page.read_text()
    assert "API_PORT" not in page.read_text()
