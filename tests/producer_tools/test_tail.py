from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from producer_tools.cli import main
from producer_tools.tail import tail
from tests.support.samples import story_events


def _publish_story(bootstrap: str, resolved: str, merged: str) -> int:
    producer = Producer({"bootstrap.servers": bootstrap})
    events = story_events()
    for e in events:
        topic = merged if e.event_type == "identity.merged" else resolved
        producer.produce(topic, json.dumps(e.payload).encode(), e.key)
    assert producer.flush(10) == 0
    return len(events)


def test_tail_cli_prints_one_readable_line_per_output_event(
    kafka_bootstrap: str, new_topic: Callable[[], str]
) -> None:
    resolved, merged = new_topic(), new_topic()
    count = _publish_story(kafka_bootstrap, resolved, merged)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "RESOLVED_TOPIC": resolved,
        "MERGED_TOPIC": merged,
    }
    result = subprocess.run(
        [sys.executable, "-m", "producer_tools", "tail", "--from-beginning", "--max-messages", str(count)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert len(lines) == count
    merged_line = next(line for line in lines if " identity.merged " in line)
    assert "key=1 surviving=1 merged=2 relinked=- primary=1 secondaries=2" in merged_line
    outcomes = sorted(line.split("outcome=")[1].split()[0] for line in lines if "outcome=" in line)
    assert outcomes == ["created_primary", "created_primary", "created_secondary", "matched", "merged"]
    assert any("emails=ada@example.com,bob@example.com phones=111,222,333" in line for line in lines)
    # A matched event created no row: JSON's null, as in the event, not Python's None.
    assert "contact=null" in next(line for line in lines if "outcome=matched" in line)
    assert "None" not in result.stdout


def test_tail_json_mode_and_dead_letters(kafka_bootstrap: str, new_topic: Callable[[], str]) -> None:
    resolved, dlq = new_topic(), new_topic()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(
        dlq,
        b"\x00garbage",
        b"k1",
        headers={
            "error.reason": b"undecodable",
            "error.message": b"value is not UTF-8 JSON",
            "original.topic": b"checkout.events",
            "original.partition": b"2",
            "original.offset": b"41",
        },
    )
    producer.produce(resolved, json.dumps(story_events()[0].payload).encode(), b"1")
    assert producer.flush(10) == 0

    out = io.StringIO()
    assert tail(kafka_bootstrap, [dlq], out, from_beginning=True, max_messages=1, dlq_topic=dlq) == 1
    line = out.getvalue().strip()
    assert line.startswith(f"{dlq}[")
    assert "@0 dead-letter key=k1 reason=undecodable" in line
    assert "original=checkout.events/2/41" in line
    assert "value is not UTF-8 JSON" in line

    out = io.StringIO()
    tail(kafka_bootstrap, [resolved, dlq], out, as_json=True, from_beginning=True, max_messages=2)
    by_topic = {m["topic"]: m for m in map(json.loads, out.getvalue().splitlines())}
    assert by_topic[resolved]["key"] == "1"
    assert by_topic[resolved]["value"]["data"]["outcome"] == "created_primary"
    assert by_topic[dlq]["headers"]["error.reason"] == "undecodable"
    assert by_topic[dlq]["value"] == "\x00garbage", "undecodable values are shown as text"


def test_tail_follows_new_messages_only(kafka_bootstrap: str, new_topic: Callable[[], str]) -> None:
    resolved = new_topic()
    payload = json.dumps(story_events()[0].payload).encode()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(resolved, payload, b"old")
    assert producer.flush(10) == 0

    out = io.StringIO()
    follower = threading.Thread(
        target=tail, args=(kafka_bootstrap, [resolved], out), kwargs={"max_messages": 1}
    )
    follower.start()
    # The follower starts at the end of the topic at some moment we cannot observe: keep producing
    # new messages until it has printed one.
    for _ in range(60):
        producer.produce(resolved, payload, b"new")
        producer.flush(10)
        follower.join(0.5)
        if not follower.is_alive():
            break
    assert not follower.is_alive(), "tail printed nothing new"
    assert " key=new " in out.getvalue()
    assert " key=old " not in out.getvalue()


def test_tail_stops_after_an_idle_timeout(kafka_bootstrap: str, new_topic: Callable[[], str]) -> None:
    out = io.StringIO()
    assert tail(kafka_bootstrap, [new_topic()], out, idle_timeout=0.5) == 0
    assert out.getvalue() == ""


def test_tail_names_a_missing_topic(kafka_bootstrap: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["tail", "--bootstrap-servers", kafka_bootstrap, "--topic", "no.such.topic.here"])
    assert "no such topic: no.such.topic.here" in str(exit_info.value)
