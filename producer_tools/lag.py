"""How far the identity workers are behind on a topic: their consumer group's committed offsets
against the partitions' ends. Read-only: it never joins the group, so the workers are not disturbed."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition


class GroupLag:
    def __init__(self, bootstrap_servers: str, topic: str, group: str) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap_servers, "group.id": group, "enable.auto.commit": False}
        )
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._partitions = [TopicPartition(topic, p) for p in sorted(partitions)]

    def lag(self) -> int | None:
        """Records not processed yet, or None while the group has committed nothing on the topic."""
        committed = self._consumer.committed(self._partitions, timeout=10)
        if all(tp.offset < 0 for tp in committed):
            return None
        behind = 0
        for tp in committed:
            low, high = self._consumer.get_watermark_offsets(tp, timeout=10)
            behind += high - max(tp.offset, low)
        return behind

    def close(self) -> None:
        self._consumer.close()
