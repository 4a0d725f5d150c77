"""Replay dead letters into the input topic once their cause is fixed: `python -m consumer.worker.replay`.

Each dead letter goes back with its original key, value and headers (the error headers dropped), so
binary-mode events keep their `ce_*` headers. Progress is committed in the consumer group
`<KAFKA_GROUP_ID>.dlq-replay` after the copies are acknowledged, so a second run replays only dead
letters that arrived since. Replaying is safe: an event that was already applied is a no-op (the
idempotency key), and one that is still bad is dead-lettered again.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumer import kafka
from consumer.config import Settings, get_settings
from consumer.logs import configure_logging
from consumer.worker.decode import Reason, header_dict
from consumer.worker.dlq import ERROR_HEADERS


def replay(
    settings: Settings,
    *,
    reasons: frozenset[str] | None = None,
    target: str | None = None,
    dry_run: bool = False,
    idle_s: float = 5.0,
) -> tuple[Counter[str], Counter[str]]:
    """Replay (or just count) the dead letters after the last replayed one; returns (seen, replayed)."""
    topic = settings.dlq_topic
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"{settings.kafka_group_id}.dlq-replay",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    producer = kafka.IdempotentProducer(settings.kafka_bootstrap_servers, client_id="identity-dlq-replay")
    seen: Counter[str] = Counter()
    replayed: Counter[str] = Counter()
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        # assign(), not subscribe(): no group rebalance to wait for, and the group's committed offsets
        # still say where the previous run stopped.
        start = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        consumer.assign([TopicPartition(tp.topic, tp.partition, _or_beginning(tp.offset)) for tp in start])
        at_end: set[int] = set()
        idle_since = time.monotonic()
        while len(at_end) < len(partitions) and time.monotonic() - idle_since < idle_s:
            batch: list[Message] = []
            for message in consumer.consume(500, 1.0):
                error = message.error()
                if error is None:
                    batch.append(message)
                    at_end.discard(message.partition() or 0)
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition() or 0)
                else:
                    raise KafkaException(error)
            if not batch:
                continue
            idle_since = time.monotonic()
            for message in batch:
                reason = header_dict(message.headers()).get("error.reason", b"").decode(errors="replace")
                seen[reason] += 1
                if not dry_run and (reasons is None or reason in reasons):
                    _send(producer, target or settings.checkout_topic, message)
                    replayed[reason] += 1
            if not dry_run:
                _flush(producer)
                consumer.commit(
                    offsets=[TopicPartition(topic, m.partition() or 0, (m.offset() or 0) + 1) for m in batch],
                    asynchronous=False,
                )
    finally:
        consumer.close()
    return seen, replayed


def _or_beginning(offset: int) -> int:
    return offset if offset >= 0 else OFFSET_BEGINNING


def _send(producer: kafka.IdempotentProducer, topic: str, message: Message) -> None:
    headers: list[tuple[str, str | bytes | None]] = [
        (k, v) for k, v in header_dict(message.headers()).items() if k not in ERROR_HEADERS
    ]
    producer.produce(topic, message.value(), message.key(), headers=headers, on_delivery=_check)


def _check(error: KafkaError | None, _: Message) -> None:
    if error is not None:
        raise KafkaException(error)


def _flush(producer: kafka.IdempotentProducer) -> None:
    """Every copy acknowledged before the progress is committed; a failed delivery raises."""
    if producer.flush(60) > 0:
        raise RuntimeError("replayed events not acknowledged within 60 s; progress not committed")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="identity dlq-replay", description=__doc__)
    parser.add_argument(
        "--reason",
        action="append",
        choices=[r.value for r in Reason],
        help="replay only dead letters with this error.reason (repeatable; default: all)",
    )
    parser.add_argument("--to", metavar="TOPIC", help="target topic (default: CHECKOUT_TOPIC)")
    parser.add_argument("--dry-run", action="store_true", help="count by reason; replay and commit nothing")
    parser.add_argument(
        "--idle-s", type=float, default=5.0, help="stop after this long without a record (default: 5)"
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings)
    seen, replayed = replay(
        settings,
        reasons=frozenset(args.reason) if args.reason else None,
        target=args.to,
        dry_run=args.dry_run,
        idle_s=args.idle_s,
    )
    for reason, n in sorted(seen.items()):
        print(f"{reason or '(no reason)'}: {n} seen, {replayed[reason]} replayed")
    print(f"total: {sum(seen.values())} seen, {sum(replayed.values())} replayed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
