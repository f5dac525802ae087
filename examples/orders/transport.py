"""A transport that prints what the relay delivers, standing in for Kafka or RabbitMQ."""

import json
from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.event.event_publisher import IAsyncEventTransport


@Pod()
class PrintingEventTransport(IAsyncEventTransport):
    """Prints each delivered event and counts them."""

    def __init__(self) -> None:
        """Start with nothing delivered."""
        self.delivered: list[tuple[str, str | None, dict[str, object]]] = []
        self._buffer: list[tuple[str, str | None, dict[str, object]]] = []

    @override
    async def send(
        self,
        event_name: str,
        payload: bytes,
        headers: dict[str, str],
        partition_key: str | None = None,
    ) -> None:
        self._buffer.append((event_name, partition_key, json.loads(payload)))

    @override
    async def flush(self) -> None:
        for name, key, body in self._buffer:
            print(f"  [relay]   {name} key={key} order={body['order_id']} amount={body['amount']}")
        self.delivered.extend(self._buffer)
        self._buffer.clear()
