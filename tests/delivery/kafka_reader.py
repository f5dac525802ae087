"""Read a topic back from the broker: every record of every partition, from the beginning."""

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient


@dataclass(frozen=True)
class ReadRecord:
    """One record as a consumer sees it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def partitions_of(bootstrap: str, topic: str) -> int:
    """How many partitions ``topic`` has on the broker."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=30)
    return len(metadata.topics[topic].partitions)


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list[ReadRecord]:
    """Wait until ``count`` records are readable; return all of them, per partition in offset order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions_of(bootstrap, topic))])
        records: list[ReadRecord] = []
        deadline = time.monotonic() + timeout
        while len(records) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(records)} of {count} records readable from {topic} after {timeout:g} s")
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            value = message.value()
            assert value is not None
            headers = [(k, v) for k, v in (message.headers() or []) if v is not None]
            records.append(ReadRecord(message.partition() or 0, message.offset() or 0, message.key(), value, headers))
        return records
    finally:
        consumer.close()
