"""Fixtures shared by the end-to-end tests."""

from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel


@pytest.fixture
async def rabbit(rabbitmq_url: str) -> AsyncIterator[AbstractChannel]:
    """A channel on the test RabbitMQ, closed afterwards."""
    connection = await aio_pika.connect_robust(rabbitmq_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=2_000)
        yield channel
    finally:
        await connection.close()
