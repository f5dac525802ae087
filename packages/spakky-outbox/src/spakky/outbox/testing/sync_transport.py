# Sync twin generated from packages/spakky-outbox/src/spakky/outbox/testing/async_transport.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): 8c90dccfb85ea8942dfbd2d8be7b6886884ab0c4d056f510d5a412937d7eb7ba
"""The synchronous recording transport; its twin ``sync_transport`` is generated (``make unasync``)."""

from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.event.event_publisher import IEventTransport
from spakky.outbox.relay.primitives import sleep
from spakky.outbox.testing.recording import RecordedEvent, RecordingTransportBase


@Pod()
class RecordingEventTransport(RecordingTransportBase, IEventTransport):
    """Synchronous transport that records deliveries and injects faults."""

    def __init__(self) -> None:
        """Start with no faults and nothing delivered."""
        super().__init__()

    @override
    def send(
        self,
        event_name: str,
        payload: bytes,
        headers: dict[str, str],
        partition_key: str | None = None,
    ) -> None:
        if self.faults.send_delay:
            sleep(self.faults.send_delay)
        self._recorder.send(RecordedEvent(event_name, payload, dict(headers), partition_key))

    @override
    def flush(self) -> None:
        if self.faults.flush_delay:
            sleep(self.faults.flush_delay)
        self._recorder.flush()
