"""`identity dev --demo`: replay the spec's hillvalley story through Kafka and show what came out.

Only the demo's own output events are shown, recognised by the ids of the events it sent, so a database
that already holds data (an earlier run, a load test) adds nothing to what is printed.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from consumer import kafka
from consumer.config import Settings
from consumer.contract import checkout_message
from consumer.normalize import Normalizer

# (email, phone, order time): Doc's two customers, then the purchase that reveals George is Biff's phone.
STORY = (
    ("lorraine@hillvalley.edu", "123456", datetime(2023, 4, 1, tzinfo=UTC)),
    ("mcfly@hillvalley.edu", "123456", datetime(2023, 4, 20, tzinfo=UTC)),
    ("george@hillvalley.edu", "919191", datetime(2023, 4, 11, tzinfo=UTC)),
    ("biffsucks@hillvalley.edu", "717171", datetime(2023, 4, 21, tzinfo=UTC)),
    ("george@hillvalley.edu", "717171", datetime(2023, 4, 22, tzinfo=UTC)),
)
SOURCE = "urn:identity-dev:demo"
WAIT_S = 60.0


def run_demo(
    settings: Settings, bootstrap_servers: str, api_url: str, api_key: str, *, say: Callable[[str], None]
) -> None:
    normalizer = Normalizer.from_settings(settings)
    producer = kafka.IdempotentProducer(bootstrap_servers, client_id="identity-dev-demo")
    outputs = _Outputs(bootstrap_servers, [settings.resolved_topic, settings.merged_topic])
    try:
        # Events with different keys may be processed in any order; the bridging purchase is sent only
        # once the four before it are reconciled, so it shows as a merge.
        for phase in (STORY[:4], STORY[4:]):
            sent: list[str] = []
            for email, phone, at in phase:
                event_id = str(uuid.uuid4())
                message = checkout_message(
                    normalizer,
                    email,
                    phone,
                    event_id=event_id,
                    source=SOURCE,
                    order_id=f"demo-{at:%m%d}",
                    time=at,
                )
                producer.produce(settings.checkout_topic, message.value, message.key, headers=message.headers)
                sent.append(event_id)
                say(f"sent checkout.completed  email={email} phone={phone} time={at:%Y-%m-%d}")
            if producer.flush(30):
                raise kafka.DeliveryFailed("the demo's events were not acknowledged within 30 s")
            say("output events (identity.resolved / identity.merged):")
            for line in outputs.wait_for(sent):
                say(f"  {line}")
    finally:
        outputs.close()
    for body in ({"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"}, {"phoneNumber": 717171}):
        status, answer = _post(f"{api_url}/identify", body, api_key)
        say(f"POST /identify {orjson.dumps(body).decode()} -> {status}")
        say(f"  {answer.decode()}")
    say(f"see it in the operator console: {api_url}/console, search lorraine@hillvalley.edu")


class _Outputs:
    """The output topics from their current end: only what arrives after the demo started is read."""

    def __init__(self, bootstrap_servers: str, topics: list[str]) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": "identity-dev-demo",
                "enable.auto.commit": False,
            }
        )
        metadata = self._consumer.list_topics(timeout=10).topics
        start = []
        for topic in topics:
            for partition in metadata[topic].partitions:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                start.append(TopicPartition(topic, partition, high))
        self._consumer.assign(start)

    def wait_for(self, event_ids: list[str]) -> list[str]:
        """Lines for the output events of `event_ids`, once each has its identity.resolved (or after
        WAIT_S), and what came with them in the same short while (identity.merged)."""
        lines: list[str] = []
        waiting = set(event_ids)
        deadline = time.monotonic() + WAIT_S
        quiet_until = None
        while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
            for message in self._consumer.consume(100, 0.2):
                if message.error() is not None:
                    continue
                event: dict[str, Any] = orjson.loads(message.value() or b"null") or {}
                data = event.get("data") or {}
                if data.get("sourceEventId") not in event_ids:
                    continue
                key = (message.key() or b"").decode()
                lines.append(f"{event.get('type')} key={key} {orjson.dumps(data).decode()}")
                if event.get("type") == "identity.resolved":
                    waiting.discard(data["sourceEventId"])
            if not waiting and quiet_until is None:
                quiet_until = time.monotonic() + 1.0
        if waiting:
            lines.append(f"({len(waiting)} event(s) not processed within {WAIT_S:g} s)")
        return lines

    def close(self) -> None:
        self._consumer.close()


def _post(url: str, body: dict[str, Any], api_key: str) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
    request = urllib.request.Request(url, data=orjson.dumps(body), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
