"""The RabbitMQ delivery adapter against the real RabbitMQ."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiormq
import pytest
from aiormq.abc import AbstractChannel, DeliveredMessage
from spakky.event.error import EventTransportNotRunningError
from spakky.outbox.delivery.rabbitmq.config import RabbitMQDeliveryConfig
from spakky.outbox.delivery.rabbitmq.transport import (
    AsyncRabbitMQOutboxTransport,
    RabbitMQOutboxTransport,
)
from spakky.outbox.error import OutboxBrokerUnavailableError, OutboxDeliveryRefusedError
from spakky_outbox_testservices.private import free_port

from .conftest import Flavoured

type Start = Callable[[Any], Any]


def _transport(flavour: str) -> AsyncRabbitMQOutboxTransport | RabbitMQOutboxTransport:
    config = RabbitMQDeliveryConfig()
    return AsyncRabbitMQOutboxTransport(config) if flavour == "async" else RabbitMQOutboxTransport(config)


@pytest.fixture
async def amqp(rabbitmq_env: str) -> AsyncIterator[AbstractChannel]:
    """A channel of the test's own on the test RabbitMQ."""
    connection = await aiormq.connect(rabbitmq_env)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


@pytest.fixture
async def cleanup(rabbitmq_env: str) -> AsyncIterator[list[str]]:
    """Names of queues and exchanges the test made; deleted afterwards."""
    names: list[str] = []
    yield names
    connection = await aiormq.connect(rabbitmq_env)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
            await channel.exchange_delete(name)
    finally:
        await connection.close()


async def _drain(channel: AbstractChannel, queue: str, count: int, timeout: float = 30.0) -> list[DeliveredMessage]:
    """Get ``count`` messages from ``queue`` (basic.get, acknowledged)."""
    messages: list[DeliveredMessage] = []
    deadline = time.monotonic() + timeout
    while len(messages) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(messages)} of {count} messages in {queue} after {timeout:g} s")
        message = await channel.basic_get(queue, no_ack=True)
        if message.body:
            messages.append(message)
        else:
            await asyncio.sleep(0.05)
    return messages


async def test_rabbitmq_delivery_batch_expect_persistent_messages_in_the_event_queue_in_order(
    rabbitmq_env: str, flavour: str, name: str, amqp: AbstractChannel, cleanup: list[str], started: Start
) -> None:
    """50 events, one flush: a durable queue named after the event holds them in order, persistent, with their headers."""
    cleanup.append(name)
    delivery: Flavoured = await started(_transport(flavour))
    for index in range(50):
        await delivery.send(name, json.dumps({"seq": index}).encode(), {"traceparent": f"t-{index}"}, f"k{index % 5}")
    await delivery.flush()
    declared = await amqp.queue_declare(name, passive=True)
    assert declared.message_count == 50
    messages = await _drain(amqp, name, 50)
    assert [json.loads(m.body)["seq"] for m in messages] == list(range(50))
    assert all(m.header.properties.delivery_mode == 2 for m in messages)
    assert [m.header.properties.headers for m in messages] == [{"traceparent": f"t-{i}"} for i in range(50)]
    durable = await amqp.queue_declare(name, durable=True)  # equivalent arguments, or RabbitMQ would refuse
    assert durable.message_count == 0


async def test_rabbitmq_delivery_exchange_expect_declared_and_bound_as_spakky_rabbitmq_does(
    rabbitmq_env: str, flavour: str, name: str, amqp: AbstractChannel, cleanup: list[str], started: Start,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With an exchange set: a direct, non-durable exchange (spakky-rabbitmq's), the queue bound by the event name."""
    cleanup.append(name)
    monkeypatch.setenv("SPAKKY_OUTBOX_RABBITMQ__EXCHANGE_NAME", name)
    delivery: Flavoured = await started(_transport(flavour))
    await delivery.send(name, b'{"n": 1}', {}, None)
    await delivery.flush()
    await amqp.exchange_declare(name, exchange_type="direct", durable=False)  # equivalent, else refused
    assert [m.body for m in await _drain(amqp, name, 1)] == [b'{"n": 1}']


async def test_rabbitmq_delivery_queue_deleted_between_batches_expect_declared_again_and_delivered(
    rabbitmq_env: str, flavour: str, name: str, amqp: AbstractChannel, cleanup: list[str], started: Start
) -> None:
    """Someone deletes the queue under the adapter: the next batch comes back unroutable, the queue is declared again, nothing is refused."""
    cleanup.append(name)
    delivery: Flavoured = await started(_transport(flavour))
    await delivery.send(name, b'{"n": 1}', {}, None)
    await delivery.flush()
    await amqp.queue_delete(name)
    for n in (2, 3):
        await delivery.send(name, json.dumps({"n": n}).encode(), {}, None)
    await delivery.flush()
    assert [m.body for m in await _drain(amqp, name, 2)] == [b'{"n": 2}', b'{"n": 3}']


async def test_rabbitmq_delivery_nacked_messages_expect_refused_alone_by_position(
    rabbitmq_env: str, flavour: str, name: str, amqp: AbstractChannel, cleanup: list[str], started: Start
) -> None:
    """A queue that rejects publishes beyond 2 messages (declared by someone else, with arguments): the rest are nacked and refused alone."""
    cleanup.append(name)
    await amqp.queue_declare(name, durable=True, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    delivery: Flavoured = await started(_transport(flavour))
    for n in range(4):
        await delivery.send(name, json.dumps({"n": n}).encode(), {}, None)
    with pytest.raises(OutboxDeliveryRefusedError) as refused:
        await delivery.flush()
    assert set(refused.value.refused) == {2, 3}
    assert all("nack" in reason for reason in refused.value.refused.values())
    assert [m.body for m in await _drain(amqp, name, 2)] == [b'{"n": 0}', b'{"n": 1}']


async def test_rabbitmq_delivery_unreachable_expect_outage_and_backoff(
    flavour: str, name: str, started: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens: flush fails as an outage (EventTransportNotRunningError); the next one within the backoff fails at once."""
    monkeypatch.setenv("SPAKKY_OUTBOX_RABBITMQ__URL", f"amqp://guest:secret-pw@127.0.0.1:{free_port()}/")
    monkeypatch.setenv("SPAKKY_OUTBOX_RABBITMQ__RECONNECT_BACKOFF_MAX_SECONDS", "60")
    delivery: Flavoured = await started(_transport(flavour))
    await delivery.send(name, b"{}", {}, None)
    with pytest.raises(OutboxBrokerUnavailableError) as first:
        await delivery.flush()
    assert isinstance(first.value, EventTransportNotRunningError)
    assert "secret-pw" not in str(first.value)
    await delivery.send(name, b"{}", {}, None)
    with pytest.raises(OutboxBrokerUnavailableError, match="reconnecting in"):
        await delivery.flush()
    transport: Any = delivery.transport
    assert transport.outbound.connection.state == "down"
    assert "secret-pw" not in (transport.outbound.connection.last_error or "")


async def test_rabbitmq_delivery_stopped_expect_not_running(rabbitmq_env: str, flavour: str, name: str) -> None:
    """Before start and after stop, send refuses with EventTransportNotRunningError (the relay's outage)."""
    delivery = Flavoured(flavour, _transport(flavour))
    with pytest.raises(EventTransportNotRunningError):
        await delivery.send(name, b"{}", {}, None)
    await delivery.start()
    await delivery.stop()
    with pytest.raises(EventTransportNotRunningError):
        await delivery.send(name, b"{}", {}, None)
