"""The drills' Kafka reader against a broker that serves a later batch before an earlier one (Tansu, issue 15).

A fake consumer stands for Tansu's fetch: it serves the stored records at or
after a partition's position and moves the position past the last one served,
so a batch stored late (its offsets reserved, its records not yet there) is
passed over unless the reader seeks back to it.
"""

import json
from dataclasses import dataclass, field

import pytest
from confluent_kafka import TopicPartition

from tests.faults import brokers
from tests.faults.brokers import KafkaSink


@dataclass
class FakeMessage:
    """One record as confluent-kafka hands it out."""

    _partition: int
    _offset: int
    _value: bytes

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None


@dataclass
class FakeTansu:
    """One partition's records (offset -> value); ``hidden`` offsets are reserved but not stored yet."""

    records: dict[int, bytes]
    hidden: set[int] = field(default_factory=set[int])


@dataclass
class FakeConsumer:
    """Serves partition 0 from its position, passing over hidden offsets as Tansu's fetch does."""

    log: FakeTansu
    position: int = 0
    seeks: list[int] = field(default_factory=list[int])
    closed: bool = False

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        served = [
            FakeMessage(0, offset, value)
            for offset, value in sorted(self.log.records.items())
            if offset >= self.position and offset not in self.log.hidden
        ][:num_messages]
        if served:
            self.position = served[-1].offset() + 1
        return served

    def seek(self, partition: TopicPartition) -> None:
        offset = partition.offset
        self.seeks.append(offset)
        self.position = offset

    def get_watermark_offsets(self, partition: object, timeout: float) -> tuple[int, int]:
        return 0, max(self.log.records) + 1

    def close(self) -> None:
        self.closed = True


def _log(count: int) -> FakeTansu:
    return FakeTansu({i: json.dumps({"key": "k000", "seq": i}).encode() for i in range(count)})


def _sink(*consumers: FakeConsumer) -> KafkaSink:
    sink = KafkaSink("127.0.0.1:1", "FakeTopic", partitions=1)
    handed = list(consumers)
    sink._new_consumer = lambda: handed.pop(0)  # type: ignore[method-assign]
    return sink


def test_kafka_sink_count_served_past_a_hole_expect_seek_back_and_every_record_taken() -> None:
    """Served offsets 5-6 while 3-4 are not stored yet, the live reader seeks back to 3 and takes 0-6 in the end."""
    log = _log(7)
    log.hidden = {3, 4}
    live = FakeConsumer(log)
    sink = _sink(live)
    assert sink.count() == 3
    log.hidden.clear()  # the earlier batch is stored now
    assert sink.count() == 7
    assert live.seeks == [3]
    assert sink.rewinds == [(0, 3, 5)]


def test_kafka_sink_read_records_the_live_reader_never_got_expect_counted_and_noted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hole the live reader gave up on is read from offset 0 at the end: every record counted, the miss noted."""
    monkeypatch.setattr(brokers, "GAP_PATIENCE_SECONDS", 0.0)
    monkeypatch.setattr(brokers, "QUIET_SECONDS", 0.05)
    log = _log(7)
    log.hidden = {3, 4}
    live = FakeConsumer(log)
    sink = _sink(live, FakeConsumer(log))
    assert sink.count() == 5  # no patience: it read on past the hole
    log.hidden.clear()
    deliveries = sink.read()
    assert sorted(d.seq for d in deliveries) == list(range(7))
    assert any("missed 2 records" in note for note in sink.notes), sink.notes
    assert live.closed
