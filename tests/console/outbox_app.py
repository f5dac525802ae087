"""A started Spakky application over a fresh PostgreSQL outbox table, for the console's tests.

The application is built the way ``spakky-outbox`` builds it (``load_plugins``
from ``SPAKKY_*`` settings, relay off) with the SQLAlchemy storage; the outbox
is filled through the storage's own calls (save in a transaction, claim,
abandon with a reason), and checks read the table with SQL.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.data.persistency.transaction import AbstractAsyncTransaction
from spakky.outbox.application.loop import StorageLoop
from spakky.outbox.cli.plugins import outbox_plugins
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.ports.storage import (
    IAsyncOutboxRetryScheduling,
    IAsyncOutboxStorage,
    IAsyncOutboxWakeUp,
)
from spakky.plugins.outbox_sqlalchemy.schema import figures_table_name
from sqlalchemy import Engine, create_engine, make_url, text


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Outbox:
    """A started application over a fresh PostgreSQL outbox table, and SQL access to that table."""

    def __init__(self, app: SpakkyApplication, engine: Engine, table: str, env: dict[str, str]) -> None:
        self.app = app
        self.engine = engine
        self.table = table
        self.env = env
        """The ``SPAKKY_*`` settings the application was started with."""
        context = app.application_context
        self.storage = context.get(IAsyncOutboxStorage)  # type: ignore[type-abstract]
        self.transaction = context.get(AbstractAsyncTransaction)  # type: ignore[type-abstract]
        self.loop = StorageLoop.of(context)

    def seed(
        self,
        count: int,
        error: str | None = None,
        key: str | None = None,
        name: str = "OrderPlaced",
        payload: bytes = b"{}",
        headers: dict[str, str] | None = None,
    ) -> list[UUID]:
        """Save ``count`` messages in one transaction; abandon them with ``error`` when given."""
        messages = [
            OutboxMessage(
                uuid4(), name, payload, dict(headers or {}), datetime.now(UTC) - timedelta(minutes=3), partition_key=key
            )
            for _ in range(count)
        ]

        async def run() -> None:
            async with self.transaction:
                for message in messages:
                    await self.storage.save(message)
            if error is None:
                return
            assert isinstance(self.storage, IAsyncOutboxRetryScheduling)
            # Claim until every new message was claimed once; hand others back untouched.
            left = {m.id for m in messages}
            for _ in range(100):
                claimed = await self.storage.fetch_pending(100, 5)
                others = [m.id for m in claimed if m.id not in left]
                for message in (m for m in claimed if m.id in left):
                    await self.storage.abandon(message.id, error.format(n=len(left)))
                    left.discard(message.id)
                await self.storage.release(others)
                if not left:
                    return
            raise AssertionError(f"{len(left)} seeded messages were never claimed")

        self.loop.run_blocking(run())
        return [m.id for m in messages]

    def count(self, where: str) -> int:
        """Rows of the table matching ``where`` (raw SQL, not the storage)."""
        with self.engine.connect() as connection:
            return int(connection.execute(text(f"SELECT count(*) FROM {self.table} WHERE {where}")).scalar_one())


@contextmanager
def started_outbox(postgres_url: str, settings: dict[str, str] | None = None) -> Iterator[Outbox]:
    """A Spakky application with the SQLAlchemy outbox on a fresh PostgreSQL table (relay off).

    Loaded as ``spakky-outbox`` loads it, plus spakky-actuator as a service with
    health endpoints would load it. ``settings``: more environment variables to start with.
    """
    url = make_url(postgres_url)
    table = f"console_outbox_{uuid4().hex[:12]}"
    env = {
        "SPAKKY_SQLALCHEMY__CONNECTION_STRING": url.set(drivername="postgresql+asyncpg").render_as_string(
            hide_password=False
        ),
        "SPAKKY_OUTBOX__STORAGE": "sqlalchemy",
        "SPAKKY_OUTBOX__RELAY": "off",
        "SPAKKY_OUTBOX_SQLALCHEMY__TABLE_NAME": table,
    }
    env.update(settings or {})
    engine = create_engine(url.set(drivername="postgresql+psycopg"))
    with environ(env):
        app = SpakkyApplication(ApplicationContext())
        app.load_plugins(include={*(outbox_plugins() or set()), Plugin(name="spakky-actuator")})
        app.start()
    outbox = Outbox(app, engine, table, env)
    try:
        yield outbox
    finally:
        # With no relay in the process nothing else closes the NOTIFY
        # connection the saves opened (the relay does it when it stops).
        assert isinstance(outbox.storage, IAsyncOutboxWakeUp)
        outbox.loop.run_blocking(outbox.storage.close_wake_up())
        app.stop()
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
            connection.execute(text(f"DROP TABLE IF EXISTS {figures_table_name(table)}"))
        engine.dispose()
