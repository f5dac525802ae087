"""One relay process: a Spakky app relaying the Redis outbox to RabbitMQ.

Configured by environment (``SPAKKY_OUTBOX__*``, ``SPAKKY_OUTBOX_REDIS__*``,
``SPAKKY_RABBITMQ__*``). Runs until SIGTERM/SIGINT or until the file named by
the first argument exists, then stops the app cleanly.
"""

import signal
import sys
import threading
from pathlib import Path

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin

RELAY_PLUGINS = frozenset(
    Plugin(name=n)
    for n in (
        "spakky-data",
        "spakky-domain",
        "spakky-event",
        "spakky-tracing",
        "spakky-auth",
        "spakky-outbox",
        "spakky-outbox-redis",
        "spakky-rabbitmq",
    )
)


def main(stop_file: Path) -> int:
    """Run the relay app until asked to stop."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    app = SpakkyApplication(ApplicationContext()).load_plugins(
        include=set(RELAY_PLUGINS)
    )
    app.start()
    try:
        while not stop.is_set() and not stop_file.exists():
            stop.wait(0.1)
    finally:
        app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
