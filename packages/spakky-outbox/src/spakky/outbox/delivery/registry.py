"""Registration of the delivery adapter ``SPAKKY_OUTBOX__DELIVERY`` names.

The adapter's transport is added for the flavour of relay this process runs
and bound to Spakky's transport port, so the relay (and anything else asking
for the port) uses it even where spakky-kafka or spakky-rabbitmq registers a
transport of its own. With ``SPAKKY_OUTBOX__DELIVERY`` unset nothing is added
and the application's transport is used, as in 8.5.
"""

from importlib.util import find_spec

from spakky.core.application.application import SpakkyApplication
from spakky.event.event_publisher import IAsyncEventTransport, IEventTransport
from spakky.outbox.common.config import (
    SPAKKY_OUTBOX_CONFIG_ENV_PREFIX,
    DeliveryChoice,
    OutboxConfig,
    RelayMode,
)
from spakky.outbox.error import OutboxDeliveryNotInstalledError

CLIENTS: dict[DeliveryChoice, str] = {
    DeliveryChoice.KAFKA: "confluent_kafka",
    DeliveryChoice.RABBITMQ: "aiormq",
}
"""The client library each adapter needs, installed by the extra of the same name."""


def register_delivery(app: SpakkyApplication, config: OutboxConfig) -> None:
    """Add the chosen adapter's settings and the transport of this process's relay flavour.

    The adapter's settings are loaded (and so checked) in every process, also
    one running no relay.

    Raises:
        OutboxDeliveryNotInstalledError: The adapter's client library is missing.
        InvalidOutboxConfigError: The adapter's settings are invalid.
    """
    choice = config.delivery
    if choice is None:
        return
    if find_spec(CLIENTS[choice]) is None:
        raise OutboxDeliveryNotInstalledError(
            f"{SPAKKY_OUTBOX_CONFIG_ENV_PREFIX}DELIVERY={choice} needs {CLIENTS[choice]}: "
            f'pip install "spakky-outbox[{choice}]"'
        )
    match choice:
        case DeliveryChoice.KAFKA:
            from spakky.outbox.delivery.kafka.async_transport import (
                AsyncKafkaOutboxTransport,
            )
            from spakky.outbox.delivery.kafka.config import KafkaDeliveryConfig
            from spakky.outbox.delivery.kafka.sync_transport import KafkaOutboxTransport

            settings, async_transport, sync_transport = (
                KafkaDeliveryConfig, AsyncKafkaOutboxTransport, KafkaOutboxTransport
            )
        case DeliveryChoice.RABBITMQ:
            from spakky.outbox.delivery.rabbitmq.config import RabbitMQDeliveryConfig
            from spakky.outbox.delivery.rabbitmq.transport import (
                AsyncRabbitMQOutboxTransport,
                RabbitMQOutboxTransport,
            )

            settings, async_transport, sync_transport = (
                RabbitMQDeliveryConfig, AsyncRabbitMQOutboxTransport, RabbitMQOutboxTransport
            )
    settings()
    app.add(settings)
    match config.relay:
        case RelayMode.ASYNC:
            app.add(async_transport)
            app.container.bind_to_type(IAsyncEventTransport, async_transport)
        case RelayMode.SYNC:
            app.add(sync_transport)
            app.container.bind_to_type(IEventTransport, sync_transport)
        case RelayMode.OFF:
            pass
