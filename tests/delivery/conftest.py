"""Both flavours of each delivery adapter behind one async face, so every test runs on both."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from spakky.event.event_publisher import IAsyncEventTransport, IEventTransport
from spakky_outbox_testservices.resolve import KafkaBroker


@dataclass
class Flavoured:
    """A sync or async transport driven from the test's loop (sync calls in a worker thread)."""

    flavour: str
    transport: IAsyncEventTransport | IEventTransport

    async def start(self) -> None:
        transport: Any = self.transport
        if isinstance(self.transport, IAsyncEventTransport):
            await transport.start_async()
        else:
            await asyncio.to_thread(transport.start)

    async def stop(self) -> None:
        transport: Any = self.transport
        if isinstance(self.transport, IAsyncEventTransport):
            await transport.stop_async()
        else:
            await asyncio.to_thread(transport.stop)

    async def send(self, event_name: str, payload: bytes, headers: dict[str, str], key: str | None) -> None:
        if isinstance(self.transport, IAsyncEventTransport):
            await self.transport.send(event_name, payload, headers, key)
        else:
            self.transport.send(event_name, payload, headers, key)

    async def flush(self) -> None:
        if isinstance(self.transport, IAsyncEventTransport):
            await self.transport.flush()
        else:
            await asyncio.to_thread(self.transport.flush)


@pytest.fixture(params=["async", "sync"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Each flavour of transport in turn."""
    return str(request.param)


@pytest.fixture
def name() -> str:
    """A topic / queue name of this test's own."""
    return f"DeliveryTest{uuid.uuid4().hex[:10]}"


@pytest.fixture
def kafka_env(kafka_broker: KafkaBroker, monkeypatch: pytest.MonkeyPatch) -> KafkaBroker:
    """``SPAKKY_OUTBOX_KAFKA__*`` pointing at the test broker."""
    monkeypatch.setenv("SPAKKY_OUTBOX_KAFKA__BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    monkeypatch.setenv("SPAKKY_OUTBOX_KAFKA__TOPIC_PARTITIONS", "4")
    return kafka_broker


@pytest.fixture
def rabbitmq_env(rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``SPAKKY_OUTBOX_RABBITMQ__URL`` pointing at the test RabbitMQ."""
    monkeypatch.setenv("SPAKKY_OUTBOX_RABBITMQ__URL", rabbitmq_url)
    return rabbitmq_url


@pytest.fixture
async def started() -> AsyncIterator[Callable[[IAsyncEventTransport | IEventTransport], Any]]:
    """Start transports for the test; stop them all afterwards."""
    running: list[Flavoured] = []

    async def start(transport: IAsyncEventTransport | IEventTransport) -> Flavoured:
        flavoured = Flavoured("async" if isinstance(transport, IAsyncEventTransport) else "sync", transport)
        await flavoured.start()
        running.append(flavoured)
        return flavoured

    yield start
    for flavoured in running:
        await flavoured.stop()
