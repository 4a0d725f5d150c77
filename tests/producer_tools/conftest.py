from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from consumer.config import Settings
from consumer.local.embedded import create_topics


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Callable[[], str]:
    """Make a fresh topic (3 partitions): tests share one broker, so each works on its own topics."""

    def make() -> str:
        name = f"test.producer-tools.{uuid.uuid4().hex[:12]}"
        create_topics(kafka_bootstrap, {name: 3})
        return name

    return make


@pytest.fixture
def topic(new_topic: Callable[[], str]) -> str:
    return new_topic()


@pytest.fixture
def settings(kafka_bootstrap: str, topic: str) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, checkout_topic=topic)
