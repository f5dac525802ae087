"""One relay process for the fault tests: a Spakky app relaying to the fault sink.

Run as ``worker.py BACKEND CONTROL_DIR`` where BACKEND is ``sqlalchemy``,
``redis`` or ``mongodb`` (configured through ``SPAKKY_*`` variables) and CONTROL_DIR holds the
sink files and the control files: the worker touches ``ready-<pid>`` once its
app is built, starts relaying when ``go`` exists, and stops cleanly on SIGTERM
or when ``stop`` exists. It delivers to the file sink, unless
``SPAKKY_OUTBOX__DELIVERY`` picks our delivery adapter or ``FAULT_TRANSPORT``
names a spakky transport plugin (see ``brokers.py``). SIGKILL is the point of some tests: then nothing is
cleaned up, exactly like a crashed pod. When the drill puts a ``hold-after-flush``
file in CONTROL_DIR, the first relay to flush a batch after that takes it,
writes the batch's ``KEY SEQ`` lines to ``hold-after-flush-held-<pid>`` and
stops there: the broker holds the batch, the outbox does not know it yet.
"""

import asyncio
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin

_CORE = ("spakky-data", "spakky-domain", "spakky-event", "spakky-tracing", "spakky-auth", "spakky-outbox")
PLUGINS: dict[str, tuple[str, ...]] = {
    "sqlalchemy": (*_CORE, "spakky-sqlalchemy", "spakky-outbox-sqlalchemy"),
    "redis": (*_CORE, "spakky-outbox-redis"),
    "mongodb": (*_CORE, "spakky-outbox-mongodb"),
}


def main(backend: str, control: Path) -> int:
    """Build the relay app, wait for ``go``, relay until asked to stop."""
    from sink import SINK_DIR_ENV, FaultSinkEventTransport

    os.environ[SINK_DIR_ENV] = str(control)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    plugins = {Plugin(name=name) for name in PLUGINS[backend]}
    transport_plugin = os.environ.get("FAULT_TRANSPORT")
    if transport_plugin is not None and transport_plugin != "spakky-kafka":
        plugins.add(Plugin(name=transport_plugin))
    if os.environ.get("FAULT_KAFKA_IDEMPOTENCE_OFF"):
        kafka_idempotence_off()
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=plugins)
    if transport_plugin == "spakky-kafka":
        _add_spakky_kafka_transports(app)
    if transport_plugin is None and not os.environ.get("SPAKKY_OUTBOX__DELIVERY"):
        app.add(FaultSinkEventTransport)
    (control / f"ready-{os.getpid()}").touch()
    while not (control / "go").exists():
        if stop.wait(0.01) or (control / "stop").exists():
            return 0
    app.start()
    _hold_after_flush(app, control)
    try:
        while not stop.is_set() and not (control / "stop").exists():
            stop.wait(0.05)
    finally:
        app.stop()
    return 0


def _hold_after_flush(app: SpakkyApplication, control: Path) -> None:
    """Let the drill stop this relay between the broker's confirmation of a batch and its acknowledgement.

    Wraps the async relay's transport (this instance only): ``send`` notes each
    event, ``flush`` flushes, then takes the drill's hold when there is one.
    """
    from sink import HOLD_AFTER_FLUSH, claim_hold, hold_threshold, report_held
    from spakky.outbox.relay.async_relay import AsyncOutboxRelayBackgroundService

    relay = app.container.get_or_none(AsyncOutboxRelayBackgroundService)
    if relay is None:
        return
    transport = relay._transport
    send, flush = transport.send, transport.flush
    # Per task: a relay works on several batches at once (BATCHES_IN_FLIGHT), each
    # sent and flushed by its own lane.
    batches: dict[asyncio.Task[object] | None, list[str]] = {}
    flushes = 0

    async def noted_send(
        event_name: str, payload: bytes, headers: dict[str, str], partition_key: str | None = None
    ) -> None:
        await send(event_name, payload, headers, partition_key)
        body = json.loads(payload)
        batches.setdefault(asyncio.current_task(), []).append(f"{body['key']} {body['seq']}")

    async def flush_then_hold() -> None:
        nonlocal flushes
        await flush()
        flushed = batches.pop(asyncio.current_task(), [])
        flushes += bool(flushed)
        threshold = hold_threshold(control, HOLD_AFTER_FLUSH) if flushed else None
        held = claim_hold(control, HOLD_AFTER_FLUSH) if threshold is not None and flushes >= threshold else None
        if held is not None:
            report_held(held, flushed)
            await asyncio.Event().wait()  # until the drill's SIGKILL

    transport.send = noted_send
    transport.flush = flush_then_hold


def _add_spakky_kafka_transports(app: SpakkyApplication) -> None:
    """spakky-kafka 8.5's transports without its plugin's consumers.

    Loaded whole, the plugin also starts its consumers, and they fail in a
    process with no Kafka ``@EventHandler`` (a relay): 8.5 subscribes to an
    empty topic list ("Failed to set subscription: Local: Invalid argument").
    """
    from spakky.plugins.kafka.common.config import KafkaConnectionConfig
    from spakky.plugins.kafka.event.transport import (
        AsyncKafkaEventTransport,
        KafkaEventTransport,
    )

    app.add(KafkaConnectionConfig)
    app.add(AsyncKafkaEventTransport)
    app.add(KafkaEventTransport)


def kafka_idempotence_off() -> None:
    """spakky-kafka's aiokafka producer without idempotence: Tansu refuses its InitProducerId v0."""
    from spakky.plugins.kafka.common.config import KafkaConnectionConfig

    shipped = KafkaConnectionConfig.async_producer_configuration_dict.fget
    assert shipped is not None
    setattr(  # noqa: B010 - a property replaced on the class, as the e2e test does
        KafkaConnectionConfig,
        "async_producer_configuration_dict",
        property(lambda config: shipped(config) | {"enable_idempotence": False}),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
