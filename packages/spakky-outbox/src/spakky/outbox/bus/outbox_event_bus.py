"""Outbox event buses (sync and async) that replace IEventBus/IAsyncEventBus via @Primary.

Both buses are always registered, but an application may bring a storage of
one flavour only (an ``IAsyncOutboxStorage`` Pod of its own, as the 6.x/8.5
docs show): the bus of the other flavour is then built without a storage and
refuses ``send`` with `OutboxStorageFlavourMissingError`, instead of stopping
the application at startup.

The async bus is written once in `spakky.outbox.bus.async_outbox_event_bus`;
the sync one is generated from it (``tools/unasync.py``); what they share is in
`spakky.outbox.bus.message_factory`.
"""

from spakky.outbox.bus.async_outbox_event_bus import AsyncOutboxEventBus
from spakky.outbox.bus.message_factory import drop_credentials
from spakky.outbox.bus.sync_outbox_event_bus import OutboxEventBus

__all__ = ["AsyncOutboxEventBus", "OutboxEventBus", "drop_credentials"]
