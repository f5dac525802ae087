"""Plugin initialization entry point."""

from spakky.core.application.application import SpakkyApplication
from spakky.outbox.bus.outbox_event_bus import AsyncOutboxEventBus, OutboxEventBus
from spakky.outbox.common.config import OutboxConfig, RelayMode
from spakky.outbox.common.registry import select_storage_name
from spakky.outbox.relay.relay import (
    AsyncOutboxRelayBackgroundService,
    OutboxRelayBackgroundService,
)


def initialize(app: SpakkyApplication) -> None:
    """Initialize the Outbox plugin.

    Registers the configuration, both outbox buses and the one relay that
    ``SPAKKY_OUTBOX__RELAY`` selects. Settings are validated and the storage
    choice checked here, so a bad value or an ambiguous install fails at
    startup with an error naming what to change.

    Args:
        app: The Spakky application instance.
    """
    config = OutboxConfig()
    select_storage_name(config)
    app.add(OutboxConfig)
    app.add(OutboxEventBus)
    app.add(AsyncOutboxEventBus)
    match config.relay:
        case RelayMode.ASYNC:
            app.add(AsyncOutboxRelayBackgroundService)
        case RelayMode.SYNC:
            app.add(OutboxRelayBackgroundService)
        case RelayMode.OFF:
            pass
