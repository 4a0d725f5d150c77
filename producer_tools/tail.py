"""`checkout-events tail`: print the service's output events, one line each, as they arrive.

It reads partitions directly (assign, no consumer group): nothing is committed, other consumers are
unaffected, and there is no group join to wait for.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterable
from typing import Any, TextIO

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Message, TopicPartition

from consumer.config import Settings


def topic_names(choices: Iterable[str], settings: Settings) -> list[str]:
    """Resolve aliases (`resolved`, `merged`, `dlq`, `checkout`) and the default topic names to settings."""
    aliases = {
        **settings.output_topics(),
        **{event_type.removeprefix("identity."): t for event_type, t in settings.output_topics().items()},
        "dlq": settings.dlq_topic,
        "checkout.events.dlq": settings.dlq_topic,
        "checkout": settings.checkout_topic,
        "checkout.events": settings.checkout_topic,
    }
    return list(dict.fromkeys(aliases.get(c, c) for c in choices))


def tail(
    bootstrap_servers: str,
    topics: list[str],
    out: TextIO,
    *,
    as_json: bool = False,
    from_beginning: bool = False,
    max_messages: int | None = None,
    idle_timeout: float | None = None,
    dlq_topic: str = "checkout.events.dlq",
) -> int:
    """Print messages until `max_messages`, `idle_timeout` s without one, or Ctrl+C; returns the count."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"checkout-events-tail-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    printed = 0
    try:
        consumer.assign(_partitions(consumer, topics, OFFSET_BEGINNING if from_beginning else OFFSET_END))
        last = time.monotonic()
        while max_messages is None or printed < max_messages:
            msg = consumer.poll(0.5)
            if msg is None:
                if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                    break
                continue
            if msg.error() is not None:
                print(f"checkout-events tail: {msg.error()}", file=sys.stderr, flush=True)
                continue
            last = time.monotonic()
            if as_json:
                line = _as_json(msg)
            else:
                line = _dlq_line(msg) if msg.topic() == dlq_topic else _readable(msg)
            print(line, file=out, flush=True)
            printed += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return printed


def _partitions(consumer: Consumer, topics: list[str], offset: int) -> list[TopicPartition]:
    metadata = consumer.list_topics(timeout=10)
    missing = [t for t in topics if t not in metadata.topics or metadata.topics[t].error is not None]
    if missing:
        raise SystemExit(f"checkout-events tail: no such topic: {', '.join(missing)}")
    return [
        TopicPartition(topic, partition, offset)
        for topic in topics
        for partition in sorted(metadata.topics[topic].partitions)
    ]


def _decode(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value.decode("utf-8", errors="replace")


def _key(msg: Message) -> str:
    key = msg.key()
    return "-" if key is None else key.decode("utf-8", errors="replace")


def _headers(msg: Message) -> dict[str, str]:
    headers = msg.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else (v or "") for k, v in pairs}


def _as_json(msg: Message) -> str:
    return json.dumps(
        {
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": None if msg.key() is None else _key(msg),
            "headers": _headers(msg),
            "value": _decode(msg.value()),
        },
        ensure_ascii=False,
    )


def _readable(msg: Message) -> str:
    where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
    event = _decode(msg.value())
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        return f"{where} key={_key(msg)} (not a structured CloudEvent) {event!r}"
    data: dict[str, Any] = event["data"]
    contact = data.get("contact") if isinstance(data.get("contact"), dict) else {}
    parts = [where, str(event.get("type")), f"key={_key(msg)}"]
    if "outcome" in data:
        parts += [f"outcome={data['outcome']}", f"contact={_scalar(data.get('contactId'))}"]
    if "survivingPrimaryId" in data:
        parts += [
            f"surviving={data['survivingPrimaryId']}",
            f"merged={_ids(data.get('mergedPrimaryIds'))}",
            f"relinked={_ids(data.get('relinkedContactIds'))}",
        ]
    if contact:
        parts += [
            f"primary={contact.get('primaryContactId')}",
            f"secondaries={_ids(contact.get('secondaryContactIds'))}",
            f"emails={_ids(contact.get('emails'))}",
            f"phones={_ids(contact.get('phoneNumbers'))}",
        ]
    elif "email" in data or "phoneNumber" in data:
        parts += [
            f"id={_scalar(event.get('id'))}",
            f"email={_scalar(data.get('email'))}",
            f"phone={_scalar(data.get('phoneNumber'))}",
        ]
    return " ".join(parts)


def _dlq_line(msg: Message) -> str:
    headers = _headers(msg)
    original = "/".join(headers.get(f"original.{h}", "?") for h in ("topic", "partition", "offset"))
    return (
        f"{msg.topic()}[{msg.partition()}]@{msg.offset()} dead-letter key={_key(msg)} "
        f"reason={headers.get('error.reason', '?')} original={original} "
        f"message={headers.get('error.message', '')!r}"
    )


def _scalar(value: object) -> str:
    """A value as JSON writes it (null, not Python's None), strings unquoted so lines stay readable."""
    return value if isinstance(value, str) else json.dumps(value)


def _ids(values: object) -> str:
    """Comma-separated, or `-` for an empty or missing list, so every line splits on spaces."""
    return (",".join(map(str, values)) if isinstance(values, list) else "") or "-"
