"""The asynchronous recording transport; its twin ``sync_transport`` is generated (``make unasync``)."""

from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.event.event_publisher import IAsyncEventTransport
from spakky.outbox.relay.primitives import sleep_async
from spakky.outbox.testing.recording import RecordedEvent, RecordingTransportBase


@Pod()
class AsyncRecordingEventTransport(RecordingTransportBase, IAsyncEventTransport):
    """Asynchronous transport that records deliveries and injects faults."""

    def __init__(self) -> None:
        """Start with no faults and nothing delivered."""
        super().__init__()

    @override
    async def send(
        self,
        event_name: str,
        payload: bytes,
        headers: dict[str, str],
        partition_key: str | None = None,
    ) -> None:
        if self.faults.send_delay:
            await sleep_async(self.faults.send_delay)
        self._recorder.send(RecordedEvent(event_name, payload, dict(headers), partition_key))

    @override
    async def flush(self) -> None:
        if self.faults.flush_delay:
            await sleep_async(self.faults.flush_delay)
        self._recorder.flush()
