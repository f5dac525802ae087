"""One relay process: a Spakky app relaying an outbox to RabbitMQ.

Run as ``relay_worker.py STOP_FILE BACKEND`` where BACKEND is a key of
`RELAY_PLUGINS` (``redis`` or ``sqlalchemy``). Configured by environment
(``SPAKKY_OUTBOX__*``, ``SPAKKY_OUTBOX_REDIS__*`` or ``SPAKKY_SQLALCHEMY__*`` and
``SPAKKY_OUTBOX_SQLALCHEMY__*``, ``SPAKKY_RABBITMQ__*``). Runs until SIGTERM/SIGINT or
until STOP_FILE exists, then stops the app cleanly. Before starting the app it
touches ``ready-<pid>`` beside STOP_FILE and waits for a ``go`` file there.
"""

import os
import signal
import sys
import threading
from pathlib import Path

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin

CORE_PLUGINS = (
    "spakky-data",
    "spakky-domain",
    "spakky-event",
    "spakky-tracing",
    "spakky-auth",
    "spakky-outbox",
    "spakky-rabbitmq",
)

RELAY_PLUGINS: dict[str, frozenset[Plugin]] = {
    "redis": frozenset(Plugin(name=n) for n in (*CORE_PLUGINS, "spakky-outbox-redis")),
    "sqlalchemy": frozenset(
        Plugin(name=n)
        for n in (*CORE_PLUGINS, "spakky-sqlalchemy", "spakky-outbox-sqlalchemy")
    ),
}
"""Plugins of a relay (and of the test's service app), per outbox backend."""

def main(stop_file: Path, backend: str) -> int:
    """Run the relay app until asked to stop."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=set(RELAY_PLUGINS[backend]))
    # Wait at the start line so every relay competes from the first claim.
    (stop_file.parent / f"ready-{os.getpid()}").touch()
    while not (stop_file.parent / "go").exists():
        if stop.wait(0.01) or stop_file.exists():
            return 0
    app.start()
    try:
        while not stop.is_set() and not stop_file.exists():
            stop.wait(0.1)
    finally:
        app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
