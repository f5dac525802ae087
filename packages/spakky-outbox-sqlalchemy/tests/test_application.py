"""A real Spakky application using the SQLAlchemy outbox through its entry points: the shared application rules."""

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import override

import pytest
from spakky.core.application.application import SpakkyApplication
from spakky.outbox.relay.relay import AsyncOutboxRelayBackgroundService
from spakky.outbox.testing.outbox_app import (
    OutboxApplicationRules,
    OutboxView,
    order_application,
    running,
)
from spakky.outbox.testing.transport import outbox_plugins, run_in_application
from spakky.plugins.outbox_sqlalchemy.storage import (
    AsyncSqlAlchemyOutboxStorage,
    SqlAlchemyOutboxStorage,
)
from spakky.plugins.sqlalchemy.persistency.connection_manager import (
    AsyncConnectionManager,
)
from spakky_outbox_testservices.environ import scoped_environ

from .app.orders import SqlOrders

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


def _stop(app: SpakkyApplication) -> None:
    """Stop the relay, dispose the engine on the loop its connections belong to, stop the app.

    spakky-sqlalchemy leaves disposing to the caller; aiosqlite connections left
    open would fail later, after their event loop closed.
    """
    context = app.application_context
    run_in_application(app, context.get(AsyncOutboxRelayBackgroundService).stop_async())
    run_in_application(app, context.get(AsyncConnectionManager).dispose())
    app.stop()


@pytest.fixture
def app(sqlite_env: Path) -> Iterator[SpakkyApplication]:
    """The orders service on SQLite, started with its relay; our storage wins over spakky-sqlalchemy's."""
    with running(order_application(PLUGINS, SqlOrders), stop=_stop) as started:
        yield started


class _SqliteOutboxView(OutboxView):
    """Reads the orders and the outbox table with plain SQL."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def _rows(self, query: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(self._path) as connection:
            return connection.execute(query).fetchall()

    @override
    def orders(self) -> dict[str, str]:
        return {str(order): str(customer) for order, customer in self._rows("SELECT * FROM orders")}

    @override
    def messages(self) -> list[tuple[str, bool]]:
        tables = self._rows("SELECT name FROM sqlite_master WHERE type='table'")
        if ("spakky_outbox_message",) not in tables:  # the relay creates it on first use
            return []
        query = "SELECT event_name, published_at IS NOT NULL FROM spakky_outbox_message"
        return sorted((str(name), bool(published)) for name, published in self._rows(query))


@pytest.fixture
def outbox_view(sqlite_env: Path) -> OutboxView:
    """The SQLite file, read with plain SQL."""
    return _SqliteOutboxView(sqlite_env)


class TestSqlAlchemyOutboxApplication(OutboxApplicationRules):
    """The outbox application rules on SQLAlchemy (a SQLite file)."""

    storage_types = (AsyncSqlAlchemyOutboxStorage, SqlAlchemyOutboxStorage)
