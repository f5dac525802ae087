"""Our delivery adapters feed spakky-kafka / spakky-rabbitmq consumers unchanged.

One service: a use case storing orders and their `E2eOrderPlaced` events in
PostgreSQL, the relay sending through our adapter (``SPAKKY_OUTBOX__DELIVERY``),
and the spakky plugin loaded as a consuming service would load it, with an
`@EventHandler` of the event. The plugin's own transport is registered too;
the relay must not use it. What the handler gets (events of each customer in
order, the trace the use case ran in, restored from the headers) is what it
got from the plugin's transport: nothing changes for consumers.

On the private Tansu (this machine) spakky-kafka's own async transport, which
the plugin starts although the relay does not use it, runs with aiokafka
idempotence off (Tansu refuses its InitProducerId v0); our adapter keeps
idempotence on against every broker.
"""

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.event.event_consumer import IAsyncEventConsumer, IEventConsumer
from spakky.event.event_publisher import IAsyncEventTransport, IEventTransport
from spakky.outbox.delivery.kafka.async_transport import AsyncKafkaOutboxTransport
from spakky.outbox.delivery.kafka.sync_transport import KafkaOutboxTransport
from spakky.outbox.delivery.rabbitmq.transport import (
    AsyncRabbitMQOutboxTransport,
    RabbitMQOutboxTransport,
)
from spakky.plugins.kafka.common.config import KafkaConnectionConfig
from spakky.plugins.kafka.event.consumer import AsyncKafkaEventConsumer
from spakky.plugins.kafka.event.transport import AsyncKafkaEventTransport
from spakky.plugins.kafka.post_processor import KafkaPostProcessor
from spakky.plugins.rabbitmq.event.consumer import (
    AsyncRabbitMQEventConsumer,
    RabbitMQEventConsumer,
)
from spakky.tracing.context import TraceContext
from spakky_outbox_testservices.resolve import KafkaBroker
from sqlalchemy import make_url

from . import consumers, sql_shop
from .common import SqlE2e, patched_environ, rabbitmq_env, run_on_app_loop, wait_until
from .consumers.handlers import RECEIVED
from .orders import E2eOrderPlaced
from .relay_worker import CORE_PLUGINS
from .sql_shop.service import E2eSqlPlaceOrderUseCase

CUSTOMERS = 4
ORDERS_PER_CUSTOMER = 5
OURS: dict[tuple[str, str], type] = {
    ("kafka", "async"): AsyncKafkaOutboxTransport,
    ("kafka", "sync"): KafkaOutboxTransport,
    ("rabbitmq", "async"): AsyncRabbitMQOutboxTransport,
    ("rabbitmq", "sync"): RabbitMQOutboxTransport,
}


@pytest.fixture(params=["async", "sync"])
def relay(request: pytest.FixtureRequest, sql_e2e: SqlE2e) -> Iterator[str]:
    """The relay flavour; the sync relay runs on psycopg 3 (one driver for both flavours)."""
    env = {"SPAKKY_OUTBOX__RELAY": str(request.param)}
    if request.param == "sync":
        env["SPAKKY_SQLALCHEMY__CONNECTION_STRING"] = (
            make_url(sql_e2e.async_url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        )
    with patched_environ(env):
        yield str(request.param)


async def _place_orders(app: SpakkyApplication, run: str, trace: TraceContext) -> dict[str, list[str]]:
    """Every customer's orders, interleaved, each use case inside ``trace``; return them per customer."""
    use_case = app.application_context.get(E2eSqlPlaceOrderUseCase)
    placed: dict[str, list[str]] = {f"{run}-c{c}": [] for c in range(CUSTOMERS)}

    async def traced(order_id: str, customer: str) -> None:
        TraceContext.set(trace)
        await use_case.execute(order_id, customer)

    for order in range(ORDERS_PER_CUSTOMER):
        for customer, orders in placed.items():
            order_id = f"{customer}-o{order}"
            await asyncio.to_thread(run_on_app_loop, app, traced(order_id, customer))
            orders.append(order_id)
    return placed


async def _assert_consumed(placed: dict[str, list[str]], trace: TraceContext) -> None:
    expected = sum(len(orders) for orders in placed.values())

    def mine() -> list[tuple[E2eOrderPlaced, str | None]]:
        return [(e, t) for e, t in RECEIVED if e.customer_id in placed]

    await wait_until(lambda: len(mine()) >= expected, 90.0, lambda: f"{len(mine())} of {expected} events consumed")
    received = mine()
    assert len(received) == expected, "duplicates"
    for customer, orders in placed.items():
        assert [e.order_id for e, _ in received if e.customer_id == customer] == orders
    assert {t for _, t in received} == {trace.trace_id}


def _start(plugin: str) -> SpakkyApplication:
    """The consuming service: our relay and the plugin's async consumer, bound over spakky-event's mediator.

    spakky-kafka's plugin is not loaded whole: its sync consumer, with no sync
    handler, fails to start (it subscribes to no topic); its other parts are
    added as the plugin adds them.
    """
    names = {*CORE_PLUGINS, "spakky-sqlalchemy", "spakky-outbox-sqlalchemy"} - {"spakky-rabbitmq"}
    if plugin == "spakky-rabbitmq":
        names.add(plugin)
    app = SpakkyApplication(ApplicationContext()).load_plugins(include={Plugin(name=n) for n in names})
    if plugin == "spakky-kafka":
        for pod in (KafkaConnectionConfig, AsyncKafkaEventConsumer, AsyncKafkaEventTransport, KafkaPostProcessor):
            app.add(pod)
        app.container.bind_to_type(IAsyncEventConsumer, AsyncKafkaEventConsumer)
    else:
        app.container.bind_to_type(IEventConsumer, RabbitMQEventConsumer)
        app.container.bind_to_type(IAsyncEventConsumer, AsyncRabbitMQEventConsumer)
    return app.scan(sql_shop).scan(consumers).start()


def _assert_ours(app: SpakkyApplication, broker: str, relay: str) -> None:
    port = IAsyncEventTransport if relay == "async" else IEventTransport
    assert type(app.application_context.get(port)) is OURS[broker, relay]


async def test_delivery_kafka_adapter_expect_spakky_kafka_consumer_gets_events_in_key_order_with_trace(
    sql_e2e: SqlE2e, relay: str, kafka_broker: KafkaBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relay through our Kafka adapter; spakky-kafka's consumer hands every event to the handler, per customer in order, in the use case's trace."""
    if kafka_broker.tansu:
        shipped = KafkaConnectionConfig.async_producer_configuration_dict.fget
        assert shipped is not None
        monkeypatch.setattr(
            KafkaConnectionConfig,
            "async_producer_configuration_dict",
            property(lambda config: shipped(config) | {"enable_idempotence": False}),
        )
    env = {
        "SPAKKY_OUTBOX__DELIVERY": "kafka",
        "SPAKKY_OUTBOX_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "SPAKKY_OUTBOX_KAFKA__TOPIC_PARTITIONS": "3",
        "SPAKKY_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "SPAKKY_KAFKA__GROUP_ID": f"e2e-wire-{uuid.uuid4().hex}",
        "SPAKKY_KAFKA__CLIENT_ID": "spakky-outbox-e2e-consumer",
        "SPAKKY_KAFKA__NUMBER_OF_PARTITIONS": "3",
    }
    run, trace = uuid.uuid4().hex[:12], TraceContext.new_root()
    with patched_environ(env):
        app = _start("spakky-kafka")
        try:
            _assert_ours(app, "kafka", relay)
            placed = await _place_orders(app, run, trace)
            await _assert_consumed(placed, trace)
        finally:
            await asyncio.to_thread(app.stop)


async def test_delivery_rabbitmq_adapter_expect_spakky_rabbitmq_consumer_gets_events_in_key_order_with_trace(
    sql_e2e: SqlE2e, relay: str, rabbitmq_url: str
) -> None:
    """Relay through our RabbitMQ adapter; spakky-rabbitmq's consumer hands every event to the handler, per customer in order, in the use case's trace."""
    env = {
        **rabbitmq_env(rabbitmq_url),
        "SPAKKY_OUTBOX__DELIVERY": "rabbitmq",
        "SPAKKY_OUTBOX_RABBITMQ__URL": rabbitmq_url,
    }
    run, trace = uuid.uuid4().hex[:12], TraceContext.new_root()
    with patched_environ(env):
        app = _start("spakky-rabbitmq")
        try:
            _assert_ours(app, "rabbitmq", relay)
            placed = await _place_orders(app, run, trace)
            await _assert_consumed(placed, trace)
        finally:
            await asyncio.to_thread(app.stop)
