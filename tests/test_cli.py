"""`identity --help` and each command's `--help` say what the command does."""

from __future__ import annotations

import pytest

from consumer.cli import main


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("dev", "embedded PostgreSQL"),
        ("migrate", "MIGRATIONS_DIR"),
        ("worker", "CHECKOUT_TOPIC"),
        ("relay", "outbox rows"),
        ("check", "invariants"),
        ("api", "uvicorn"),
    ],
)
def test_every_command_describes_itself(command: str, words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert words in " ".join(capsys.readouterr().out.split())
