"""The Kafka delivery adapter against a real broker (Apache Kafka, or the private Tansu here)."""

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka.admin import AdminClient, NewTopic
from spakky.event.error import EventDeliveryRejectedError, EventTransportNotRunningError
from spakky.outbox.delivery.kafka.async_transport import AsyncKafkaOutboxTransport
from spakky.outbox.delivery.kafka.config import KafkaDeliveryConfig
from spakky.outbox.delivery.kafka.sync_transport import KafkaOutboxTransport
from spakky.outbox.error import OutboxBrokerUnavailableError
from spakky_outbox_testservices.private import free_port
from spakky_outbox_testservices.resolve import KafkaBroker

from .conftest import Flavoured
from .kafka_reader import partitions_of, read_topic

type Start = Callable[[Any], Any]


def _transport(flavour: str) -> AsyncKafkaOutboxTransport | KafkaOutboxTransport:
    config = KafkaDeliveryConfig()
    return AsyncKafkaOutboxTransport(config) if flavour == "async" else KafkaOutboxTransport(config)


def _murmur2(key: bytes, partitions: int) -> int:
    every = list(range(partitions))
    return DefaultPartitioner()(key, every, every)


async def test_kafka_delivery_batch_expect_records_as_spakky_kafka_writes_them_and_keys_in_order(
    kafka_env: KafkaBroker, flavour: str, name: str, started: Start
) -> None:
    """40 events over 8 keys, one flush: topic made with 4 partitions, key = partition key (murmur2), value and headers unchanged, each key in order."""
    delivery: Flavoured = await started(_transport(flavour))
    sent: list[tuple[str, int]] = []
    for index in range(40):
        key, seq = f"customer-{index % 8}", index // 8
        payload = json.dumps({"key": key, "seq": seq}).encode()
        await delivery.send(name, payload, {"traceparent": f"00-{index:032x}-{index:016x}-01"}, key)
        sent.append((key, seq))
    await delivery.flush()
    records = await asyncio.to_thread(read_topic, kafka_env.bootstrap, name, 40)
    assert await asyncio.to_thread(partitions_of, kafka_env.bootstrap, name) == 4
    assert len(records) == 40
    by_key: dict[str, list[int]] = {}
    for record in records:
        body = json.loads(record.value)
        assert record.key == body["key"].encode()
        assert record.partition == _murmur2(record.key, 4)
        index = body["seq"] * 8 + int(body["key"].split("-")[1])
        assert record.headers == [("traceparent", f"00-{index:032x}-{index:016x}-01".encode())]
        by_key.setdefault(body["key"], []).append(body["seq"])
    assert {key: seqs for key, seqs in by_key.items()} == {f"customer-{k}": list(range(5)) for k in range(8)}


async def test_kafka_delivery_existing_topic_expect_used_as_it_is(
    kafka_env: KafkaBroker, flavour: str, name: str, started: Start
) -> None:
    """A topic that exists with 2 partitions keeps them; records spread over both by key; a record without key goes too."""
    admin = AdminClient({"bootstrap.servers": kafka_env.bootstrap})
    await asyncio.to_thread(lambda: admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(30))
    delivery: Flavoured = await started(_transport(flavour))
    for index in range(20):
        await delivery.send(name, b"{}", {}, f"k{index}")
    await delivery.send(name, b"{}", {}, None)
    await delivery.flush()
    records = await asyncio.to_thread(read_topic, kafka_env.bootstrap, name, 21)
    assert await asyncio.to_thread(partitions_of, kafka_env.bootstrap, name) == 2
    assert {r.partition for r in records} == {0, 1}
    assert sum(r.key is None for r in records) == 1


async def test_kafka_delivery_oversized_record_expect_refused_alone_at_send(
    kafka_env: KafkaBroker, flavour: str, name: str, started: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record over the producer's size limit is refused at send (EventDeliveryRejectedError); its neighbours arrive."""
    monkeypatch.setenv("SPAKKY_OUTBOX_KAFKA__OPTIONS", json.dumps({"message.max.bytes": 10_000}))
    delivery: Flavoured = await started(_transport(flavour))
    await delivery.send(name, b'{"n": 1}', {}, "k")
    with pytest.raises(EventDeliveryRejectedError) as refused:
        await delivery.send(name, b"x" * 20_000, {}, "k")
    assert "MSG_SIZE_TOO_LARGE" in str(refused.value.reasons)
    await delivery.send(name, b'{"n": 3}', {}, "k")
    await delivery.flush()
    records = await asyncio.to_thread(read_topic, kafka_env.bootstrap, name, 2)
    assert [r.value for r in records] == [b'{"n": 1}', b'{"n": 3}']


async def test_kafka_delivery_unreachable_broker_expect_outage_within_confirm_timeout(
    flavour: str, name: str, started: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No broker at the address: the flush fails as an outage (EventTransportNotRunningError, no budget spent) after the confirm timeout."""
    monkeypatch.setenv("SPAKKY_OUTBOX_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("SPAKKY_OUTBOX_KAFKA__CREATE_TOPICS", "false")
    monkeypatch.setenv("SPAKKY_OUTBOX_KAFKA__CONFIRM_TIMEOUT_SECONDS", "1.5")
    delivery: Flavoured = await started(_transport(flavour))
    await delivery.send(name, b"{}", {}, "k")
    began = time.monotonic()
    with pytest.raises(OutboxBrokerUnavailableError) as outage:
        await delivery.flush()
    assert isinstance(outage.value, EventTransportNotRunningError)
    assert "1 of 1 records unconfirmed" in str(outage.value)
    assert time.monotonic() - began < 30
    transport: Any = delivery.transport
    assert transport.outbound.connection.state == "down"


async def test_kafka_delivery_unreachable_broker_with_topic_creation_expect_outage_at_send(
    flavour: str, name: str, started: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No broker, topic creation on: the send that must create the topic fails as an outage, not a refusal."""
    monkeypatch.setenv("SPAKKY_OUTBOX_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("SPAKKY_OUTBOX_KAFKA__CONFIRM_TIMEOUT_SECONDS", "1.5")
    delivery: Flavoured = await started(_transport(flavour))
    with pytest.raises(OutboxBrokerUnavailableError, match=f"could not create topic '{name}'"):
        await delivery.send(name, b"{}", {}, "k")


async def test_kafka_delivery_stopped_expect_not_running(kafka_env: KafkaBroker, flavour: str, name: str) -> None:
    """Before start and after stop, send refuses with EventTransportNotRunningError (the relay's outage)."""
    delivery = Flavoured(flavour, _transport(flavour))
    with pytest.raises(EventTransportNotRunningError):
        await delivery.send(name, b"{}", {}, None)
    await delivery.start()
    await delivery.stop()
    with pytest.raises(EventTransportNotRunningError):
        await delivery.send(name, b"{}", {}, None)
