"""The inbox sweeper in a real Spakky application on PostgreSQL, MariaDB and SQLite: records past the window go by themselves."""

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from spakky.core.application.application import SpakkyApplication
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.inbox.sweeper import AsyncInboxSweeperBackgroundService
from spakky.outbox.testing.transport import recording_application
from spakky.outbox.testing.waiting import wait_for
from spakky.plugins.outbox_sqlalchemy.inbox import create_inbox_table, inbox_table
from spakky.plugins.sqlalchemy.persistency.connection_manager import (
    AsyncConnectionManager,
)
from sqlalchemy import Engine, create_engine, insert, make_url, select

from . import app as app_package
from .conftest import SYNC_DRIVER, driver_url
from .test_application import PLUGINS

EXPIRED = [f"old-{n}" for n in range(5)]
FRESH = ["new-0", "new-1"]


class Database:
    """An inbox table of its own on one database, reached through a sync engine (the backdoor)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = f"inbox_{uuid.uuid4().hex[:12]}"
        self.table = inbox_table(self.name)
        driver = SYNC_DRIVER[make_url(url).drivername]
        self.engine: Engine = create_engine(make_url(url).set(drivername=driver))

    def write(self, message_ids: list[str], recorded_at: datetime) -> None:
        """Write done records (no lease) as a handler would have, ``recorded_at`` as given."""
        with self.engine.begin() as connection:
            create_inbox_table(connection, self.table)
            connection.execute(
                insert(self.table),
                [{"consumer": "billing", "message_id": m, "recorded_at": recorded_at} for m in message_ids],
            )

    def message_ids(self) -> list[str]:
        """Every record's message id, sorted."""
        with self.engine.connect() as connection:
            return sorted(connection.scalars(select(self.table.c.message_id)))


@pytest.fixture(params=("postgresql+asyncpg", "mysql+aiomysql", "sqlite+aiosqlite"))
def database(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    """A database with an inbox table; the application's settings point at it (short sweep interval, batch 2)."""
    database = Database(driver_url(request, request.param, tmp_path))
    for name, value in {
        "SPAKKY_SQLALCHEMY__CONNECTION_STRING": database.url,
        "SPAKKY_OUTBOX__STORAGE": "sqlalchemy",
        "SPAKKY_OUTBOX__RELAY": "off",
        "SPAKKY_OUTBOX_SQLALCHEMY__INBOX_TABLE_NAME": database.name,
        "SPAKKY_OUTBOX__INBOX__SWEEP_INTERVAL_SECONDS": "0.05",
        "SPAKKY_OUTBOX__INBOX__SWEEP_BATCH": "2",
    }.items():
        monkeypatch.setenv(name, value)
    yield database
    with database.engine.begin() as connection:
        database.table.drop(connection, checkfirst=True)
    database.engine.dispose()


def _stop(app: SpakkyApplication) -> None:
    """Stop the sweeper, dispose the engine on the application's loop, stop the app."""
    context = app.application_context
    loop = context.get(ApplicationEventLoop)
    loop.run(context.get(AsyncInboxSweeperBackgroundService).stop_async(), timeout=30)
    loop.run(context.get(AsyncConnectionManager).dispose(), timeout=30)
    app.stop()


def test_inbox_sweeper_sql_expired_records_expect_swept_fresh_kept_stopped_with_app(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Records older than the window vanish in 2-row batches without a CLI call; fresh ones stay; stop is clean."""
    caplog.set_level(logging.INFO, logger="spakky.outbox.inbox.sweeper")
    database.write(EXPIRED, datetime.now(UTC) - timedelta(days=8))
    database.write(FRESH, datetime.now(UTC))
    app = recording_application(app_package, PLUGINS).start()
    try:
        assert wait_for(lambda: database.message_ids() == FRESH, timeout=30)
        # The sweep logs once its last batch came back short, just after that commit.
        assert wait_for(lambda: "Inbox sweep removed 5 records past the window" in caplog.messages, timeout=30)
    finally:
        _stop(app)
    assert "Inbox sweeper stopped" in caplog.messages
    assert database.message_ids() == FRESH
