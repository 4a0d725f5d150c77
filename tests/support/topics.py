"""Every test works on topics of its own (one broker serves the whole session)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from consumer.local.embedded import create_topics

OUTPUT_PARTITIONS = 3


@dataclass(frozen=True)
class Topics:
    """The input, dead-letter and output topics and the consumer group of one test."""

    checkout: str
    dlq: str
    resolved: str
    merged: str
    split: str
    erased: str
    group: str
    partitions: int

    @classmethod
    def create(cls, bootstrap: str, partitions: int = 1, prefix: str = "test") -> Topics:
        """New topics: the input with `partitions`, one for dead letters, OUTPUT_PARTITIONS per output."""
        tag = f"{prefix}-{uuid.uuid4().hex[:10]}"
        topics = cls(
            f"{tag}.checkout",
            f"{tag}.dlq",
            f"{tag}.identity.resolved",
            f"{tag}.identity.merged",
            f"{tag}.identity.split",
            f"{tag}.identity.erased",
            tag,
            partitions,
        )
        create_topics(
            bootstrap,
            {
                topics.checkout: partitions,
                topics.dlq: 1,
                **dict.fromkeys(topics.outputs, OUTPUT_PARTITIONS),
            },
        )
        return topics

    @property
    def outputs(self) -> list[str]:
        return [self.resolved, self.merged, self.split, self.erased]

    def env(self) -> dict[str, str]:
        return {
            "CHECKOUT_TOPIC": self.checkout,
            "DLQ_TOPIC": self.dlq,
            "RESOLVED_TOPIC": self.resolved,
            "MERGED_TOPIC": self.merged,
            "SPLIT_TOPIC": self.split,
            "ERASED_TOPIC": self.erased,
            "KAFKA_GROUP_ID": self.group,
        }
