from __future__ import annotations

import json
from pathlib import Path

import pytest

from producer_tools.cli import main
from tests.support.kafka import consume

SECRET = "hidden.person@example.com"


def test_replay_sends_good_lines_and_reports_bad_ones_by_line_number(
    kafka_bootstrap: str, topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        json.dumps({"email": "A@Example.com", "phoneNumber": 5550100, "orderId": 1, "id": "e-1"}),
        "{not json " + SECRET,
        "",
        json.dumps({"phone": "+44 20 7946 0000", "id": "e-2", "time": "2026-02-01T00:00:00"}),
        json.dumps({"email": SECRET, "phoneNumber": True}),
        json.dumps([SECRET]),
        json.dumps({"email": " ", "phoneNumber": None, "orderId": "nothing"}),
        json.dumps({"email": SECRET, "time": "last tuesday"}),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    code = main(["replay", str(path), "--bootstrap-servers", kafka_bootstrap, "--topic", topic])

    out, err = capsys.readouterr()
    assert code == 1, "skipped lines make the exit code 1"
    assert "sent 2, skipped 5 bad line(s)" in out
    for reported in (
        "line 2: invalid_json",
        "line 5: invalid_type",
        "line 6: not_an_object",
        "line 7: no_identifiers",
        "line 8: invalid_time",
    ):
        assert reported in err
    assert SECRET not in out + err
    received = {r.event["id"]: r for r in consume(kafka_bootstrap, topic, 2)}
    assert received["e-1"].key == "a@example.com"
    assert received["e-1"].event["data"] == {"email": "A@Example.com", "phoneNumber": 5550100, "orderId": 1}
    assert received["e-2"].key == "+442079460000"
    assert received["e-2"].event["time"] == "2026-02-01T00:00:00Z", "a time without offset is UTC"


def test_replay_reads_csv_with_column_aliases(
    kafka_bootstrap: str, topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,email,phone,order_id,time\n"
        "c-1,ada@example.com,,o-1,2026-01-05T10:00:00Z\n"
        "c-2,,555 0100,o-2,\n"
        "c-3,,,o-3,\n"
    )
    code = main(
        ["replay", str(path), "--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--rate", "1000"]
    )
    assert code == 1
    assert "line 4: no_identifiers" in capsys.readouterr().err
    received = {r.event["id"]: r for r in consume(kafka_bootstrap, topic, 2)}
    assert received["c-1"].key == "ada@example.com"
    assert received["c-1"].event["data"] == {
        "email": "ada@example.com",
        "phoneNumber": None,
        "orderId": "o-1",
    }
    assert received["c-2"].key == "5550100"
    assert received["c-2"].event["data"]["phoneNumber"] == "555 0100", "CSV values are strings, sent as given"


def test_replay_of_a_clean_file_exits_zero(
    kafka_bootstrap: str, topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps({"email": f"u{i}@example.com"}) + "\n" for i in range(20)))
    assert main(["replay", str(path), "--bootstrap-servers", kafka_bootstrap, "--topic", topic]) == 0
    assert "sent 20, skipped 0" in capsys.readouterr().out
    assert len({r.key for r in consume(kafka_bootstrap, topic, 20)}) == 20


def test_replay_rejects_a_csv_without_identifier_columns(
    kafka_bootstrap: str, topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("orderId,total\no-1,10\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", str(path), "--bootstrap-servers", kafka_bootstrap, "--topic", topic])
    assert exit_info.value.code == 2
    assert "no email or phone column" in capsys.readouterr().err
