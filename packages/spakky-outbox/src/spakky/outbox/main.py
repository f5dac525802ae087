"""Plugin initialization entry point."""

import logging
from importlib.util import find_spec

from spakky.core.application.application import SpakkyApplication
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.bus.outbox_event_bus import AsyncOutboxEventBus, OutboxEventBus
from spakky.outbox.common.config import OutboxConfig, RelayMode
from spakky.outbox.delivery.registry import register_delivery
from spakky.outbox.inbox.async_aspect import AsyncIdempotentAspect
from spakky.outbox.inbox.config import InboxConfig
from spakky.outbox.inbox.sweeper import AsyncInboxSweeperBackgroundService
from spakky.outbox.inbox.sync_aspect import IdempotentAspect
from spakky.outbox.registry import OutboxStorageGuard
from spakky.outbox.relay.health import OutboxHealthCheck
from spakky.outbox.relay.relay import (
    AsyncOutboxRelayBackgroundService,
    OutboxRelayBackgroundService,
)

logger = logging.getLogger(__name__)


def initialize(app: SpakkyApplication) -> None:
    """Initialize the Outbox plugin.

    Registers the configuration, both outbox buses, the inbox aspects and, unless
    ``SPAKKY_OUTBOX__INBOX__SWEEP_INTERVAL_SECONDS`` is 0, the inbox sweeper, the health check,
    `ApplicationEventLoop`, OpenTelemetry metrics and tracing when
    ``opentelemetry-api`` is installed, the health check as a spakky-actuator probe
    when spakky-actuator is installed, the one relay that ``SPAKKY_OUTBOX__RELAY`` selects and,
    when ``SPAKKY_OUTBOX__DELIVERY`` names one, the outbox's own delivery adapter.
    Settings are validated here, so a bad value fails at startup with an error
    naming the variable to change, and a costly one (a busy polling interval, a
    huge batch) is logged as a warning.

    Args:
        app: The Spakky application instance.
    """
    config = OutboxConfig()
    inbox_config = InboxConfig()
    app.add(OutboxConfig)
    app.add(OutboxStorageGuard)
    app.add(OutboxEventBus)
    app.add(AsyncOutboxEventBus)
    app.add(OutboxHealthCheck)
    app.add(ApplicationEventLoop)
    app.add(InboxConfig)
    app.add(AsyncIdempotentAspect)
    app.add(IdempotentAspect)
    if inbox_config.sweep_interval_seconds > 0:
        app.add(AsyncInboxSweeperBackgroundService)
    if find_spec("opentelemetry") is not None:
        from spakky.outbox.relay.opentelemetry import OpenTelemetryOutboxMetrics
        from spakky.outbox.tracing.opentelemetry import OpenTelemetryOutboxTracer

        app.add(OpenTelemetryOutboxMetrics)
        app.add(OpenTelemetryOutboxTracer)
    if find_spec("spakky.actuator") is not None:
        from spakky.outbox.actuator import OutboxActuatorHealthProbe

        app.add(OutboxActuatorHealthProbe)
    register_delivery(app, config)
    if config.relay is not RelayMode.OFF:
        for warning in config.unusual_settings():
            logger.warning("Outbox setting %s", warning)
    match config.relay:
        case RelayMode.ASYNC:
            app.add(AsyncOutboxRelayBackgroundService)
        case RelayMode.SYNC:
            app.add(OutboxRelayBackgroundService)
        case RelayMode.OFF:
            pass
