"""The billing service: ``python consumer.py`` invoices every OrderPlaced once, until Ctrl-C.

Needs PostgreSQL and RabbitMQ. It loads spakky-outbox for its inbox only
(no relay: this service publishes nothing) beside spakky-rabbitmq, and
without spakky-event (see the quickstarts' pitfalls). The settings below
point at local servers and yield to the environment.
"""

import asyncio
import logging
import os
import signal
import threading

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from sqlalchemy.ext.asyncio import create_async_engine

import billing
from billing.invoices import metadata

SETTINGS = {
    # spakky-sqlalchemy: the database of the invoices and of the inbox table
    "SPAKKY_SQLALCHEMY__CONNECTION_STRING": "postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/postgres",
    # spakky-outbox: the inbox only, no relay
    "SPAKKY_OUTBOX__RELAY": "off",
    # spakky-rabbitmq: where the OrderPlaced queue is consumed
    "SPAKKY_RABBITMQ__USE_SSL": "false",
    "SPAKKY_RABBITMQ__HOST": "127.0.0.1",
    "SPAKKY_RABBITMQ__PORT": "5672",
    "SPAKKY_RABBITMQ__USER": "guest",
    "SPAKKY_RABBITMQ__PASSWORD": "guest",
}
PLUGINS = {
    Plugin(name=name)
    for name in (
        "spakky-data", "spakky-domain", "spakky-tracing", "spakky-rabbitmq",
        "spakky-sqlalchemy", "spakky-outbox", "spakky-outbox-sqlalchemy",
    )
}


async def create_invoices_table() -> None:
    """Create the service's own table; the inbox creates its table itself."""
    engine = create_async_engine(os.environ["SPAKKY_SQLALCHEMY__CONNECTION_STRING"])
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    await engine.dispose()


def main() -> None:
    """Consume until Ctrl-C or SIGTERM."""
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, value)
    # The inbox logs each duplicate it skips at INFO; show those lines only.
    logging.basicConfig(format="[billing] %(message)s")
    logging.getLogger("spakky.outbox.inbox").setLevel(logging.INFO)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    asyncio.run(create_invoices_table())
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=PLUGINS).scan(billing).start()
    print("[billing] waiting for OrderPlaced (Ctrl-C stops)", flush=True)
    stop.wait()
    app.stop()


if __name__ == "__main__":
    main()
