"""One consumer process of the inbox drill: a Spakky service consuming through spakky-rabbitmq or spakky-kafka.

Run as ``python -m tests.faults.inbox_consumer BROKER CONTROL_DIR`` from the
repository root, BROKER ``rabbitmq`` or ``kafka``, configured by environment
(``SPAKKY_SQLALCHEMY__*``, ``SPAKKY_OUTBOX_SQLALCHEMY__INBOX_TABLE_NAME``,
``SPAKKY_RABBITMQ__*`` or ``SPAKKY_KAFKA__*``, and the ``INBOX_DRILL_*``
variables of `tests.faults.inbox_app.handlers`). It loads the plugins a
consuming service loads (no relay: ``SPAKKY_OUTBOX__RELAY=off``), scans
`tests.faults.inbox_app`, touches ``consumer-ready-<pid>`` once consuming and
stops cleanly on SIGTERM or when ``consumer-stop`` exists.
"""

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.event.event_consumer import IAsyncEventConsumer, IEventConsumer
from spakky.plugins.outbox_sqlalchemy.inbox import AsyncSqlAlchemyInboxStorage

from tests.faults import inbox_app
from tests.faults.inbox_app.handlers import DrillLog
from tests.faults.worker import PLUGINS, kafka_idempotence_off

KAFKA_TANSU_ENV = "INBOX_DRILL_TANSU"
"""Set: the Kafka broker is Tansu (spakky-kafka's aiokafka producer then runs without idempotence)."""
KAFKA_SESSION_TIMEOUT_MS = 6000
"""The consumer group session: a killed member leaves the group this soon, and Tansu answers a
JoinGroup after about half of it (23 s with librdkafka's default 45 s)."""
STOP_FILE = "consumer-stop"


def main(broker: str, control: Path) -> int:
    """Build the consuming service, consume until asked to stop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    _count_skips()
    app = _service(broker).start()
    (control / f"consumer-ready-{os.getpid()}").touch()
    try:
        while not stop.is_set() and not (control / STOP_FILE).exists():
            stop.wait(0.05)
    finally:
        app.stop()
    return 0


def _service(broker: str) -> SpakkyApplication:
    """The plugins of a consuming service on PostgreSQL, its broker's consumer bound as spakky's."""
    names = set(PLUGINS["sqlalchemy"])
    if broker == "rabbitmq":
        names.add("spakky-rabbitmq")
    app = SpakkyApplication(ApplicationContext()).load_plugins(include={Plugin(name=n) for n in names})
    if broker == "rabbitmq":
        from spakky.plugins.rabbitmq.event.consumer import (
            AsyncRabbitMQEventConsumer,
            RabbitMQEventConsumer,
        )

        app.container.bind_to_type(IEventConsumer, RabbitMQEventConsumer)
        app.container.bind_to_type(IAsyncEventConsumer, AsyncRabbitMQEventConsumer)
    else:
        _add_spakky_kafka_consumer(app)
    return app.scan(inbox_app)


def _add_spakky_kafka_consumer(app: SpakkyApplication) -> None:
    """spakky-kafka's async consumer and what it needs, as the plugin adds them, with a short group session.

    Not the whole plugin: its sync consumer, with no sync handler, fails to
    start (it subscribes to no topic).
    """
    from spakky.plugins.kafka.common.config import KafkaConnectionConfig
    from spakky.plugins.kafka.event.consumer import AsyncKafkaEventConsumer
    from spakky.plugins.kafka.event.transport import AsyncKafkaEventTransport
    from spakky.plugins.kafka.post_processor import KafkaPostProcessor

    if os.environ.get(KAFKA_TANSU_ENV):
        kafka_idempotence_off()
    shipped = KafkaConnectionConfig.consumer_configuration_dict.fget
    assert shipped is not None
    setattr(  # noqa: B010 - a property replaced on the class, as kafka_idempotence_off does
        KafkaConnectionConfig,
        "consumer_configuration_dict",
        property(
            lambda config: shipped(config)
            | {"session.timeout.ms": KAFKA_SESSION_TIMEOUT_MS, "heartbeat.interval.ms": 1000}
        ),
    )
    for pod in (KafkaConnectionConfig, AsyncKafkaEventConsumer, AsyncKafkaEventTransport, KafkaPostProcessor):
        app.add(pod)
    app.container.bind_to_type(IAsyncEventConsumer, AsyncKafkaEventConsumer)


def _count_skips() -> None:
    """Log each delivery the inbox skips (the drill's count of duplicates it stopped).

    Wraps the SQLAlchemy inbox's ``record`` in this process: False is the
    skip. On the class, before the application is built: getting the inbox
    from the container before ``start`` would build its session manager
    before the application context is set on it.
    """
    log = DrillLog()
    record = AsyncSqlAlchemyInboxStorage.record

    async def counted(self: AsyncSqlAlchemyInboxStorage, consumer: str, message_id: str) -> bool:
        fresh = await record(self, consumer, message_id)
        if not fresh:
            await log.skipped(message_id)
        return fresh

    setattr(AsyncSqlAlchemyInboxStorage, "record", counted)  # noqa: B010 - the drill's instrument


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
