"""Another service: ``python consumer.py`` prints every OrderPlaced until Ctrl-C.

It loads spakky-rabbitmq without spakky-event: with both in one app, any
@EventHandler stops startup with NoUniquePodError (each registers an
IEventConsumer), so consumers run in an app of their own, as another service would.
"""

import os
import signal
import threading

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin

import listeners

SETTINGS = {
    "SPAKKY_RABBITMQ__USE_SSL": "false",
    "SPAKKY_RABBITMQ__HOST": "127.0.0.1",
    "SPAKKY_RABBITMQ__PORT": "5672",
    "SPAKKY_RABBITMQ__USER": "guest",
    "SPAKKY_RABBITMQ__PASSWORD": "guest",
}
PLUGINS = {Plugin(name="spakky-rabbitmq"), Plugin(name="spakky-tracing")}


def main() -> None:
    """Consume until Ctrl-C or SIGTERM."""
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, value)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=PLUGINS).scan(listeners).start()
    print("[consumer] waiting for OrderPlaced (Ctrl-C stops)", flush=True)
    stop.wait()
    app.stop()


if __name__ == "__main__":
    main()
