from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from consumer.normalize import Normalizer
from producer_tools import CheckoutRecord, SyntheticStream, read_records, synthetic_records
from producer_tools.cli import main
from tests.support.kafka import consume

NORMALIZER = Normalizer()


def test_the_same_seed_gives_the_same_stream_and_another_seed_does_not() -> None:
    first = list(synthetic_records(200, 2000, seed=7))
    assert first == list(synthetic_records(200, 2000, seed=7))
    assert first != list(synthetic_records(200, 2000, seed=8))
    assert len({r.event_id for r in first}) == 2000


def test_the_stream_has_the_requested_identity_structure() -> None:
    stream = SyntheticStream(customers=500, events=20_000, seed=1, merge_rate=0.1, late_rate=0.05)
    records = list(stream.records())
    email_owner = {e: c.index for c in stream.population for e in c.emails}
    phone_owners: dict[str, set[int]] = defaultdict(set)
    for c in stream.population:
        for p in c.phones:
            phone_owners[p].add(c.index)

    ids = [NORMALIZER.identifiers(r.email, r.phone) for r in records]
    bridging = sum(
        1
        for i in ids
        if i.email is not None and i.phone is not None and email_owner[i.email] not in phone_owners[i.phone]
    )
    assert 0.08 < bridging / len(records) < 0.12, "merge rate roughly honoured"

    shared = {p for p, owners in phone_owners.items() if len(owners) > 1}
    assert shared, "households share family phones"
    family_users = {email_owner[i.email] for i in ids if i.phone in shared and i.email is not None}
    assert any(len(phone_owners[p] & family_users) > 1 for p in shared), "two family members used one phone"

    late = 0
    latest = records[0].time
    for r in records:
        assert r.time is not None
        assert latest is not None
        late += r.time < latest
        latest = max(latest, r.time)
    assert 0.03 < late / len(records) < 0.07, "late arrivals, earlier than events already sent"

    purchases = Counter(email_owner[i.email] for i in ids if i.email is not None)
    assert purchases.most_common(1)[0][1] >= 10, "some customers buy repeatedly"
    emails_used = defaultdict(set)
    for i in ids:
        if i.email is not None:
            emails_used[email_owner[i.email]].add(i.email)
    assert any(len(used) > 1 for used in emails_used.values()), "customers use several emails"
    assert any(i.email is None for i in ids)
    assert any(i.phone is None for i in ids)
    assert any(r.email != i.email for r, i in zip(records, ids, strict=True)), "raw spellings vary"


def test_streams_of_different_seeds_share_no_email_or_phone() -> None:
    def identifiers(seed: int) -> set[str]:
        values = set()
        for r in synthetic_records(100, 2000, seed=seed):
            found = NORMALIZER.identifiers(r.email, r.phone)
            values |= {v for v in (found.email, found.phone) if v is not None}
        return values

    first, second, eleventh = identifiers(1), identifiers(2), identifiers(11)
    assert first
    assert not first & second
    assert not first & eleventh
    assert not second & eleventh


def test_a_family_phone_links_two_to_four_emails() -> None:
    stream = SyntheticStream(customers=400, events=20_000, seed=3, merge_rate=0.02)
    emails_by_phone: dict[str, set[str]] = defaultdict(set)
    for r in stream.records():
        found = NORMALIZER.identifiers(r.email, r.phone)
        if found.email is not None and found.phone in stream.family_phones:
            emails_by_phone[found.phone].add(found.email)
    sizes = Counter(len(emails) for emails in emails_by_phone.values())
    assert max(sizes) <= 4, sizes
    assert sum(n for size, n in sizes.items() if size >= 2) > len(emails_by_phone) / 2, sizes


def test_invalid_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        SyntheticStream(customers=10, events=10, merge_rate=1.5)
    with pytest.raises(ValueError, match="two households"):
        SyntheticStream(customers=1, events=10, merge_rate=0.1)


def test_generate_sends_the_seeded_stream(
    kafka_bootstrap: str, topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--customers", "30", "--events", "150", "--seed", "5", "--merge-rate", "0.1"]
    assert main(["generate", *args, "--bootstrap-servers", kafka_bootstrap, "--topic", topic]) == 0
    assert "150 events (sent 150) by 30 customers" in capsys.readouterr().out

    expected = {r.event_id: r for r in synthetic_records(30, 150, seed=5, merge_rate=0.1)}
    received = consume(kafka_bootstrap, topic, 150)
    assert {r.event["id"] for r in received} == set(expected)
    for message in received:
        record = expected[message.event["id"]]
        assert message.key == NORMALIZER.identifiers(record.email, record.phone).partition_key
        assert message.event["type"] == "checkout.completed"
        assert message.event["data"] == {
            "email": record.email,
            "phoneNumber": record.phone,
            "orderId": record.order_id,
        }


def test_generate_output_is_a_replayable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stream.jsonl"
    assert (
        main(["generate", "--customers", "40", "--events", "300", "--seed", "2", "--output", str(path)]) == 0
    )
    assert "300 events (written)" in capsys.readouterr().err
    replayed = [item for _, item in read_records(path, NORMALIZER)]
    assert all(isinstance(r, CheckoutRecord) for r in replayed)
    assert replayed == list(synthetic_records(40, 300, seed=2))


def test_generate_dry_run_writes_json_lines_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--customers", "5", "--events", "4", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["orderId"] for line in lines] == [f"ord-0-{i:09d}" for i in range(4)]


def test_generate_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in (
        "(default: 1000)",
        "(default: 10000)",
        "(default: 0)",
        "(default: 0.02)",
        "(default: 0.05)",
    ):
        assert default in text
