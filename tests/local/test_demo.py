"""`identity dev --demo` on a database and topics that already hold other events shows only its own."""

from __future__ import annotations

from consumer.config import Settings
from consumer.local.demo import run_demo
from tests.support.database import published
from tests.support.kafka import envelope, produce, structured
from tests.support.polling import wait_until
from tests.support.processes import ApiServer
from tests.support.stack import Stack


def test_the_demo_shows_only_the_output_events_of_its_own_events(stack: Stack, api: ApiServer) -> None:
    earlier = [structured(envelope(f"old-{i}", f"old{i}@example.com", f"+1999{i:04d}")) for i in range(40)]
    produce(stack.bootstrap, stack.topics.checkout, earlier)
    stack.start("worker")
    stack.start("relay")
    wait_until(lambda: published(stack.database_url) == len(earlier), 60, "the earlier events published")

    settings = Settings(
        kafka_bootstrap_servers=stack.bootstrap,
        checkout_topic=stack.topics.checkout,
        resolved_topic=stack.topics.resolved,
        merged_topic=stack.topics.merged,
    )
    lines: list[str] = []
    run_demo(settings, stack.bootstrap, api.url, api.key, say=lines.append)
    output = "\n".join(lines)

    assert "old" not in output, output
    assert "None" not in output, output
    events = [line for line in lines if line.strip().startswith("identity.")]
    # Four new customers, then the purchase that merges George's and Biff's: five resolved, one merged.
    assert sorted(e.split()[0] for e in events) == ["identity.merged"] + ["identity.resolved"] * 5, output
    assert '"outcome":"merged"' in output
    assert '"contactId":null' in output  # JSON, as the event carries it
    assert "POST /identify" in output
    assert "-> 401" not in output
