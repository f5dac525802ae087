"""The broker connection in the outbox's health (issue 15.5): connected, reconnecting since when and why, connected again.

Each adapter (both flavours) delivers through a TCP fault proxy to a real
broker (the machine's RabbitMQ; a private Tansu advertising the proxy's port);
the test cuts the proxy and restores it and reads `OutboxHealthCheck` — the
check behind ``spakky-outbox health``, the console and the actuator probe —
and its worded line and JSON document along the way. The cut outlasts the
confirm timeout, so the Kafka records time out: the adapter must make a new
producer once Tansu fences the old one's bumped epoch, or nothing is delivered
after the restore.
"""

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.outbox.cli.render import health_json, health_line
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.stats import OutboxTarget
from spakky.outbox.delivery.batch import BrokerState, IBrokerConnectionSource
from spakky.outbox.delivery.kafka.async_transport import AsyncKafkaOutboxTransport
from spakky.outbox.delivery.kafka.config import KafkaDeliveryConfig
from spakky.outbox.delivery.kafka.sync_transport import KafkaOutboxTransport
from spakky.outbox.delivery.rabbitmq.config import RabbitMQDeliveryConfig
from spakky.outbox.delivery.rabbitmq.transport import (
    AsyncRabbitMQOutboxTransport,
    RabbitMQOutboxTransport,
)
from spakky.outbox.error import OutboxBrokerUnavailableError
from spakky.outbox.relay.health import OutboxHealth, OutboxHealthCheck
from spakky.outbox.testing.memory import (
    AsyncInMemoryOutboxStorage,
    AsyncInMemoryTransaction,
    InMemoryOutboxState,
    InMemoryOutboxStorage,
    InMemoryTransaction,
)
from spakky_outbox_testservices.private import free_port
from spakky_outbox_testservices.tansu import running_tansu

from tests.faults.proxy import FaultProxy, fault_proxy

from .conftest import Flavoured

type Start = Any
DEADLINE_SECONDS = 60.0
"""How long the broker may take to be seen down, or back (reconnection backoffs included)."""
TARGET = OutboxTarget(backend="in-memory", location="in process")


@pytest.fixture
def rabbitmq_proxy(rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """Our RabbitMQ adapter's settings pointing at the machine's RabbitMQ through a fault proxy."""
    direct = urlsplit(rabbitmq_url)
    with fault_proxy(direct.hostname or "127.0.0.1", direct.port or 5672) as proxy:
        credentials = direct.netloc.rpartition("@")[0]
        monkeypatch.setenv(
            "SPAKKY_OUTBOX_RABBITMQ__URL", direct._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}").geturl()
        )
        monkeypatch.setenv("SPAKKY_OUTBOX_RABBITMQ__CONFIRM_TIMEOUT_SECONDS", "3")
        monkeypatch.setenv("SPAKKY_OUTBOX_RABBITMQ__RECONNECT_BACKOFF_MAX_SECONDS", "0.5")
        yield proxy


@pytest.fixture
def kafka_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """Our Kafka adapter's settings pointing at a private Tansu that advertises a fault proxy's port."""
    port = free_port()
    with fault_proxy("127.0.0.1", port) as proxy, running_tansu(port=port, advertised_port=proxy.port):
        monkeypatch.setenv("SPAKKY_OUTBOX_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{proxy.port}")
        monkeypatch.setenv("SPAKKY_OUTBOX_KAFKA__CONFIRM_TIMEOUT_SECONDS", "3")
        yield proxy


def _rabbitmq(flavour: str) -> AsyncRabbitMQOutboxTransport | RabbitMQOutboxTransport:
    config = RabbitMQDeliveryConfig()
    return AsyncRabbitMQOutboxTransport(config) if flavour == "async" else RabbitMQOutboxTransport(config)


def _kafka(flavour: str) -> AsyncKafkaOutboxTransport | KafkaOutboxTransport:
    config = KafkaDeliveryConfig()
    return AsyncKafkaOutboxTransport(config) if flavour == "async" else KafkaOutboxTransport(config)


async def _deliver(delivery: Flavoured, name: str) -> bool:
    """One message sent and flushed; False when the broker could not be reached."""
    try:
        await delivery.send(name, b'{"n": 1}', {}, "k")
        await delivery.flush()
    except OutboxBrokerUnavailableError:
        return False
    return True


async def _health(check: OutboxHealthCheck) -> OutboxHealth:
    return await check.check()


async def _cut_and_restore(
    delivery: Flavoured, proxy: FaultProxy, name: str, broker: str
) -> None:
    """Connected, cut (reconnecting since the cut, with the error), restored (connected again): health says each."""
    transport = delivery.transport
    assert isinstance(transport, IBrokerConnectionSource)
    check = OutboxHealthCheck(OutboxConfig(), delivery=transport)
    before = await _health(check)
    assert before.broker is not None and before.broker.state is BrokerState.NOT_CONNECTED, before
    assert "not connected yet" in health_line(before)

    assert await _deliver(delivery, name), "the first delivery failed with the proxy open"
    connected = await _health(check)
    assert connected.broker is not None and connected.broker.state is BrokerState.CONNECTED, connected
    assert connected.broker.broker == broker and connected.broker.last_error is None
    assert f"127.0.0.1:{proxy.port}" in connected.broker.target, connected
    assert f"broker {connected.broker.target} connected" in health_line(connected)

    cut_at = datetime.now(UTC)
    proxy.cut()
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (down := await _health(check)).broker is None or down.broker.state is not BrokerState.DOWN:
        assert time.monotonic() < deadline, f"health never saw the cut: {down}"
        await _deliver(delivery, name)
    assert down.broker is not None
    assert down.broker.since >= cut_at and down.broker.last_error, down
    assert down.healthy, f"a broker reconnecting is reported, not judged: {down}"
    line = health_line(down)
    assert f"broker {down.broker.target} reconnecting since {down.broker.since.isoformat()}" in line, line
    assert "last error: " in line, line
    document: Any = health_json(TARGET, down, None)["broker"]
    assert document["state"] == "down" and document["since"] == down.broker.since.isoformat(), document
    assert document["last_error"] == down.broker.last_error

    proxy.restore()
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not await _deliver(delivery, name):
        assert time.monotonic() < deadline, f"no delivery within {DEADLINE_SECONDS:g} s of the restore"
        await asyncio.sleep(0.1)
    back = await _health(check)
    assert back.broker is not None and back.broker.state is BrokerState.CONNECTED, back
    assert back.broker.since > down.broker.since and back.broker.last_error is None, back


async def test_broker_health_rabbitmq_proxy_cut_expect_reconnecting_since_the_cut_then_connected(
    rabbitmq_proxy: FaultProxy, flavour: str, name: str, started: Start, rabbitmq_url: str
) -> None:
    """RabbitMQ adapter (both flavours): the health's broker state follows a cut of every connection and its restore."""
    import pika

    delivery: Flavoured = await started(_rabbitmq(flavour))
    try:
        await _cut_and_restore(delivery, rabbitmq_proxy, name, "rabbitmq")
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        connection.channel().queue_delete(name)
        connection.close()


async def test_broker_health_kafka_proxy_cut_expect_reconnecting_since_the_cut_then_connected(
    kafka_proxy: FaultProxy, flavour: str, name: str, started: Start
) -> None:
    """Kafka adapter (both flavours, Tansu): the health's broker state follows a cut of every connection and its restore."""
    delivery: Flavoured = await started(_kafka(flavour))
    await _cut_and_restore(delivery, kafka_proxy, name, "kafka")


PLUGINS = {Plugin(name=n) for n in ("spakky-data", "spakky-domain", "spakky-event", "spakky-tracing", "spakky-outbox")}


@pytest.mark.parametrize("relay", ["async", "sync", "off"])
def test_broker_health_application_expect_adapter_state_in_the_check_where_it_relays(
    rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch, relay: str
) -> None:
    """In an application with SPAKKY_OUTBOX__DELIVERY set, OutboxHealthCheck reads the adapter's connection; with the relay off there is none."""
    monkeypatch.setenv("SPAKKY_OUTBOX__DELIVERY", "rabbitmq")
    monkeypatch.setenv("SPAKKY_OUTBOX_RABBITMQ__URL", rabbitmq_url)
    monkeypatch.setenv("SPAKKY_OUTBOX__RELAY", relay)
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=PLUGINS)
    for pod in (InMemoryOutboxState, InMemoryTransaction, AsyncInMemoryTransaction, InMemoryOutboxStorage, AsyncInMemoryOutboxStorage):
        app.add(pod)
    app.start()
    try:
        health = asyncio.run(app.application_context.get(OutboxHealthCheck).check())
    finally:
        app.stop()
    if relay == "off":
        assert health.broker is None, health
    else:
        assert health.broker is not None and health.broker.broker == "rabbitmq", health
        assert health.broker.state is BrokerState.NOT_CONNECTED, health
