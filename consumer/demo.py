"""`identity dev --demo`: replay the spec's hillvalley story through Kafka and show what came out."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import orjson

from consumer.config import Settings

# (email, phone, order time): Doc's two customers, then the purchase that reveals George is Biff's phone.
STORY = (
    ("lorraine@hillvalley.edu", "123456", datetime(2023, 4, 1, tzinfo=UTC)),
    ("mcfly@hillvalley.edu", "123456", datetime(2023, 4, 20, tzinfo=UTC)),
    ("george@hillvalley.edu", "919191", datetime(2023, 4, 11, tzinfo=UTC)),
    ("biffsucks@hillvalley.edu", "717171", datetime(2023, 4, 21, tzinfo=UTC)),
    ("george@hillvalley.edu", "717171", datetime(2023, 4, 22, tzinfo=UTC)),
)


def run_demo(settings: Settings, bootstrap_servers: str, api_url: str, *, say: Callable[[str], None]) -> None:
    from producer_tools import CheckoutProducer

    shown = 0
    with CheckoutProducer(bootstrap_servers, settings.checkout_topic, settings=settings) as producer:
        # Events with different keys may be processed in any order; the bridging purchase is sent only
        # once the four before it are reconciled, so it shows as a merge.
        for phase in (STORY[:4], STORY[4:]):
            for email, phone, time in phase:
                producer.send(email, phone, time=time, order_id=f"demo-{time:%m%d}")
                say(f"sent checkout.completed  email={email} phone={phone} time={time:%Y-%m-%d}")
            producer.flush()
            shown = _show_outputs(settings, bootstrap_servers, shown, say)
    for body in ({"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"}, {"phoneNumber": 717171}):
        response = httpx.post(f"{api_url}/identify", json=body, timeout=10)
        say(f"POST /identify {orjson.dumps(body).decode()} -> {response.status_code}")
        say(f"  {orjson.dumps(response.json()).decode()}")
    say(f"see it in the operator console: {api_url}/console, search lorraine@hillvalley.edu")


def _show_outputs(
    settings: Settings, bootstrap_servers: str, already_shown: int, say: Callable[[str], None]
) -> int:
    """Print the output events after the first `already_shown`, once none arrives for 10 s."""
    from producer_tools.tail import tail

    out = io.StringIO()
    seen = tail(
        bootstrap_servers,
        [settings.resolved_topic, settings.merged_topic],
        out,
        from_beginning=True,
        idle_timeout=10,
    )
    say("output events (identity.resolved / identity.merged):")
    for line in out.getvalue().splitlines()[already_shown:]:
        say(f"  {line}")
    return seen
