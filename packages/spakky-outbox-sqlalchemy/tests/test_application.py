"""A real Spakky application using the SQLAlchemy outbox through its entry points."""

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from spakky.core.application.application import SpakkyApplication
from spakky.outbox.ports.storage import IAsyncOutboxStorage, IOutboxStorage
from spakky.outbox.relay.relay import AsyncOutboxRelayBackgroundService
from spakky.outbox.testing.events import OrderRejectedError
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    outbox_plugins,
    recording_application,
    run_in_application,
)
from spakky.outbox.testing.waiting import wait_for
from spakky.plugins.outbox_sqlalchemy.storage import (
    AsyncSqlAlchemyOutboxStorage,
    SqlAlchemyOutboxStorage,
)
from spakky.plugins.sqlalchemy.persistency.connection_manager import (
    AsyncConnectionManager,
)
from spakky_outbox_testservices.environ import scoped_environ

from . import app as app_package
from .app.service import PlaceOrderUseCase

PLUGINS = outbox_plugins("spakky-sqlalchemy", "spakky-outbox-sqlalchemy")


@pytest.fixture
def sqlite_env(tmp_path: Path) -> Iterator[Path]:
    """Point the app at a SQLite file holding an ``orders`` table."""
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE orders (order_id TEXT, customer_id TEXT)")
    settings = {
        "SPAKKY_SQLALCHEMY__CONNECTION_STRING": f"sqlite+aiosqlite:///{path}",
        "SPAKKY_OUTBOX__STORAGE": "sqlalchemy",
        "SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS": "0.05",
    }
    with scoped_environ(settings):
        yield path


def _build() -> SpakkyApplication:
    return recording_application(app_package, PLUGINS)



def _stop(app: SpakkyApplication) -> None:
    """Stop the relay, dispose the engine on the loop its connections belong to, stop the app.

    spakky-sqlalchemy leaves disposing to the caller; aiosqlite connections left
    open would fail later, after their event loop closed.
    """
    context = app.application_context
    run_in_application(app, context.get(AsyncOutboxRelayBackgroundService).stop_async())
    run_in_application(app, context.get(AsyncConnectionManager).dispose())
    app.stop()



def _rows(path: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(query).fetchall()


def test_application_use_case_expect_order_and_event_committed_then_relayed(
    sqlite_env: Path,
) -> None:
    """Our storage wins over spakky-sqlalchemy's; the use case commits; the relay sends."""
    app = _build().start()
    try:
        context = app.application_context
        assert isinstance(
            context.get(IAsyncOutboxStorage), AsyncSqlAlchemyOutboxStorage
        )
        assert isinstance(context.get(IOutboxStorage), SqlAlchemyOutboxStorage)
        transport = context.get(AsyncRecordingEventTransport)
        run_in_application(app, context.get(PlaceOrderUseCase).execute("o-1", "c-1"))
        assert _rows(sqlite_env, "SELECT order_id FROM orders") == [("o-1",)]
        delivered = wait_for(lambda: list(transport.delivered), timeout=10)
        assert [(d.event_name, d.partition_key) for d in delivered] == [
            ("OrderPlaced", "c-1")
        ]
    finally:
        _stop(app)


def test_application_failed_use_case_expect_nothing_stored(sqlite_env: Path) -> None:
    """A use case failing after publishing leaves neither order nor message."""
    app = _build().start()
    try:
        with pytest.raises(OrderRejectedError):
            run_in_application(
                app,
                app.application_context.get(PlaceOrderUseCase).execute(
                    "o-2", "c", fail=True
                ),
            )
        assert _rows(sqlite_env, "SELECT * FROM orders") == []
        tables = _rows(sqlite_env, "SELECT name FROM sqlite_master WHERE type='table'")
        if ("spakky_outbox_message",) in tables:  # the relay may have created it
            assert _rows(sqlite_env, "SELECT * FROM spakky_outbox_message") == []
    finally:
        _stop(app)
