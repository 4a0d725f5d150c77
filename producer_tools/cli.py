"""`checkout-events`: emit checkout events and watch what the identity service makes of them.

Exit codes: 0 success; 1 some records were skipped (replay) or not delivered; 2 usage or input errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TextIO, TypeVar

from tqdm import tqdm

from consumer.config import Settings, get_settings
from consumer.kafka import GroupLag
from producer_tools.generate import SyntheticStream
from producer_tools.producer import DEFAULT_SOURCE, CheckoutProducer, DeliveryError
from producer_tools.records import BadLine, CheckoutRecord, parse_time, read_records
from producer_tools.tail import tail, topic_names

T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    settings = get_settings()
    try:
        if args.command == "send":
            return _send(args, settings)
        if args.command == "replay":
            return _replay(args, settings)
        if args.command == "generate":
            return _generate(args, settings)
        return _tail(args, settings)
    except (ValueError, OSError) as exc:  # IdentifierError and RecordError are ValueErrors
        parser.exit(2, f"checkout-events {args.command}: {exc}\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="checkout-events", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kafka = argparse.ArgumentParser(add_help=False)
    kafka.add_argument("--bootstrap-servers", help="Kafka servers (default: KAFKA_BOOTSTRAP_SERVERS)")
    producing = argparse.ArgumentParser(add_help=False, parents=[kafka])
    producing.add_argument("--topic", help="topic to produce to (default: CHECKOUT_TOPIC)")
    producing.add_argument("--source", default=DEFAULT_SOURCE, help="event source (default: %(default)s)")
    pacing = argparse.ArgumentParser(add_help=False)
    pacing.add_argument("--rate", type=_positive_float, help="send at most N events per second")

    send = commands.add_parser("send", parents=[producing], help="emit one checkout.completed event")
    send.add_argument("--email", help="buyer's email, as the checkout form received it")
    send.add_argument("--phone", help="phone number, as the checkout form received it")
    send.add_argument("--id", help="event id (default: a fresh uuid4)")
    send.add_argument("--order-id", help="the order's id, carried in data.orderId (default: none)")
    send.add_argument("--time", type=parse_time, help="ISO 8601 event time (default: now; no offset = UTC)")

    replay = commands.add_parser(
        "replay",
        parents=[producing, pacing],
        help="emit the checkout records of a JSON-lines or CSV file",
        description="Fields: email, phoneNumber (or phone), orderId (or order_id), id (or event_id), time "
        "(ISO 8601). A line that cannot become an event is reported with its line number and reason, "
        "skipped and counted; the exit code is then 1, after every good line was sent.",
    )
    replay.add_argument("file", type=Path)
    replay.add_argument("--format", choices=("jsonl", "csv"), help="file format (default: from the suffix)")

    generate = commands.add_parser(
        "generate",
        parents=[producing, pacing],
        help="emit a synthetic, seeded stream with realistic identity structure",
    )
    generate.add_argument(
        "--customers", type=_positive_int, default=1000, help="distinct customers (default: %(default)s)"
    )
    generate.add_argument(
        "--events", type=_positive_int, default=10_000, help="events to emit (default: %(default)s)"
    )
    generate.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        help="the same seed gives the same stream; another seed, other customers (default: %(default)s)",
    )
    generate.add_argument(
        "--merge-rate",
        type=_probability,
        default=0.02,
        help="share of events bridging two customers (default: %(default)s)",
    )
    generate.add_argument(
        "--late-rate", type=_probability, default=0.05, help="share of late events (default: %(default)s)"
    )
    output = generate.add_mutually_exclusive_group()
    output.add_argument("--output", type=Path, help="write JSON lines (replay's format) here, do not send")
    output.add_argument("--dry-run", action="store_true", help="write JSON lines to stdout, do not send")
    generate.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="do not wait for the workers (KAFKA_GROUP_ID) to process what was sent",
    )

    tail_cmd = commands.add_parser("tail", parents=[kafka], help="print output events as they arrive")
    tail_cmd.add_argument(
        "--topic",
        action="append",
        dest="topics",
        metavar="TOPIC",
        help="resolved, merged, dlq, checkout or a topic name; repeatable (default: resolved and merged)",
    )
    tail_cmd.add_argument("--json", action="store_true", help="one JSON object per message")
    tail_cmd.add_argument("--from-beginning", action="store_true", help="start at the oldest message")
    tail_cmd.add_argument("--max-messages", type=_positive_int, help="stop after N messages")
    tail_cmd.add_argument("--idle-timeout", type=_positive_float, help="stop after N seconds without one")
    return parser


def _producer(args: argparse.Namespace, settings: Settings) -> CheckoutProducer:
    return CheckoutProducer(args.bootstrap_servers, args.topic, source=args.source, settings=settings)


def _send(args: argparse.Namespace, settings: Settings) -> int:
    producer = _producer(args, settings)
    event_id = producer.send(args.email, args.phone, event_id=args.id, order_id=args.order_id, time=args.time)
    return _flushed(producer, lambda: print(event_id))


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    path: Path = args.file
    with path.open("rb") as handle:
        lines = sum(1 for _ in handle)
    producer = _producer(args, settings)
    skipped = 0
    with tqdm(total=lines, unit="line", desc="replay", file=sys.stderr, disable=None) as progress:
        previous = 0
        for line, item in _paced(read_records(path, producer.normalizer, args.format), args.rate):
            if isinstance(item, BadLine):
                skipped += 1
                progress.write(f"skipped {item}", file=sys.stderr)
            else:
                producer.send_record(item)
            progress.update(line - previous)
            previous = line
    return _flushed(
        producer,
        lambda: print(f"replayed {path}: sent {producer.delivered}, skipped {skipped} bad line(s)"),
        failed=skipped > 0,
    )


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    stream = SyntheticStream(args.customers, args.events, args.seed, args.merge_rate, args.late_rate)
    progress = tqdm(
        stream.records(), total=args.events, unit="event", desc="generate", file=sys.stderr, disable=None
    )
    records = _paced(progress, args.rate)
    if args.output or args.dry_run:
        target = args.output.open("w", encoding="utf-8") if args.output else nullcontext(sys.stdout)
        with target as out:
            _write_json_lines(records, out)
        print(_summary(stream, "written"), file=sys.stderr)
        return 0
    producer = _producer(args, settings)
    lag = GroupLag(
        args.bootstrap_servers or settings.kafka_bootstrap_servers, producer.topic, settings.kafka_group_id
    )
    sending = threading.Event()
    sending.set()
    # Measuring the lag takes a fetch round trip: a thread of its own keeps it off the sending loop.
    watch = threading.Thread(target=_watch_lag, args=(lag, progress, sending), daemon=True)
    watch.start()
    try:
        for record in records:
            producer.send_record(record)
        sending.clear()
        watch.join()
        progress.close()
        status = _flushed(producer, lambda: print(_summary(stream, f"sent {producer.delivered}")))
        if args.wait:
            _await_processing(lag, settings.kafka_group_id)
    finally:
        sending.clear()
        watch.join()
        lag.close()
    return status


def _watch_lag(lag: GroupLag, progress: tqdm[CheckoutRecord], sending: threading.Event) -> None:
    while sending.is_set():
        progress.set_postfix(worker_lag=lag.lag() if lag.started() else "no worker yet", refresh=False)
        time.sleep(1)


def _await_processing(lag: GroupLag, group: str, patience_s: float = 10.0) -> None:
    """Show the workers catching up until the lag is 0, or it stops shrinking for `patience_s`."""
    behind = lag.lag()
    if not lag.started():
        print(f"no worker of group {group} has consumed this topic yet; not waiting", file=sys.stderr)
        return
    with tqdm(total=behind, unit="event", desc="processed", file=sys.stderr, disable=None) as bar:
        start, best, since = behind, behind, time.monotonic()
        while behind and time.monotonic() - since < patience_s:
            time.sleep(0.5)
            behind = lag.lag()
            bar.update(max(0, start - behind - bar.n))
            if behind < best:
                best, since = behind, time.monotonic()
    if behind:
        print(
            f"workers of group {group} are still {behind} event(s) behind; stopped waiting", file=sys.stderr
        )


def _tail(args: argparse.Namespace, settings: Settings) -> int:
    topics = topic_names(args.topics or ["resolved", "merged"], settings)
    tail(
        args.bootstrap_servers or settings.kafka_bootstrap_servers,
        topics,
        sys.stdout,
        as_json=args.json,
        from_beginning=args.from_beginning,
        max_messages=args.max_messages,
        idle_timeout=args.idle_timeout,
        dlq_topic=settings.dlq_topic,
    )
    return 0


def _flushed(producer: CheckoutProducer, report: Callable[[], None], *, failed: bool = False) -> int:
    """Wait for delivery, then report; 1 if a message was not delivered or `failed`."""
    try:
        producer.flush()
    except DeliveryError as exc:
        print(f"checkout-events: {exc}", file=sys.stderr)
        failed = True
    report()
    return 1 if failed else 0


def _summary(stream: SyntheticStream, outcome: str) -> str:
    s = stream.stats
    households = len(stream.family_phones)
    return (
        f"{s.records} events ({outcome}) by {stream.customers} customers, {households} households sharing "
        f"a family phone: {s.bridging} bridging, {s.late} late, {s.email_only} email-only, "
        f"{s.phone_only} phone-only, {s.family_phone_events} with a family phone"
    )


def _write_json_lines(records: Iterable[CheckoutRecord], out: TextIO) -> None:
    for record in records:
        out.write(json.dumps(record.to_json()) + "\n")


def _paced(items: Iterable[T], rate: float | None) -> Iterator[T]:
    """At most `rate` items per second, on a fixed schedule so short stalls are caught up."""
    if rate is None:
        yield from items
        return
    start = time.monotonic()
    for n, item in enumerate(items):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield item


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return number


def _probability(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return number
