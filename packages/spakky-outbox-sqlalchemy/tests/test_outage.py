"""Which errors mean a lost connection, and that the storage's pool forgets such connections."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg.exceptions
import psycopg.errors
import pymysql.err
import pytest
from spakky.outbox.error import OutboxStorageUnavailableError
from spakky.plugins.outbox_sqlalchemy.outage import (
    connection_lost,
    is_outage,
    unavailable,
    watch_connection_loss,
)
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, InternalError, ProgrammingError

LOST = [
    ConnectionRefusedError(111, "Connect call failed"),
    ConnectionResetError(104, "Connection reset by peer"),
    asyncpg.exceptions.InternalClientError("cannot switch to state 15"),
    asyncpg.exceptions.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation"
    ),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    pymysql.err.OperationalError(2006, "MySQL server has gone away"),
    pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"),
    pymysql.err.OperationalError(1053, "Server shutdown in progress"),
    InternalError("SELECT 1", {}, Exception("wrapped"), connection_invalidated=True),
]
NOT_LOST = [
    ValueError("bad value"),
    asyncpg.exceptions.UniqueViolationError("duplicate key"),
    psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    pymysql.err.ProgrammingError(1146, "Table 'test.x' doesn't exist"),
]


@pytest.mark.parametrize("error", LOST, ids=lambda e: type(e).__name__)
def test_connection_lost_driver_errors_expect_true(error: Exception) -> None:
    """Refusals, resets, shutdowns and stuck protocols count as a lost connection."""
    wrapped = ProgrammingError("SELECT 1", {}, error)  # as SQLAlchemy wraps driver errors
    assert connection_lost(error) and connection_lost(wrapped)
    assert is_outage(error)
    assert isinstance(unavailable(wrapped), OutboxStorageUnavailableError)


@pytest.mark.parametrize("error", NOT_LOST, ids=lambda e: type(e).__name__)
def test_connection_lost_other_errors_expect_false(error: Exception) -> None:
    """Errors of a working connection are not mistaken for a lost one."""
    assert not connection_lost(error)
    assert not connection_lost(ProgrammingError("SELECT 1", {}, error))


def test_unavailable_expect_driver_error_named() -> None:
    """Our outage error names the driver's error class and text."""
    error = unavailable(DBAPIError("SELECT 1", {}, OSError("refused")))
    assert str(error) == "Outbox storage is unavailable: OSError: refused"


STUCK = "cannot switch to state 15; another operation (2) is in progress"


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A pooled SQLite engine on which statements marked ``/*fail*/`` hit asyncpg's stuck state."""
    engine = create_engine(f"sqlite:///{tmp_path}/pool.db", pool_size=2)

    @event.listens_for(engine, "before_cursor_execute")
    def _fail(*args: Any) -> None:  # pyright: ignore[reportUnusedFunction]
        if "/*fail*/" in args[2]:
            raise asyncpg.exceptions.InternalClientError(STUCK)

    yield engine
    engine.dispose()


def _invalidations(engine: Engine) -> list[object]:
    seen: list[object] = []
    event.listen(engine.pool, "invalidate", lambda *_: seen.append(1))  # pyright: ignore[reportUnknownLambdaType, reportUnknownArgumentType]
    event.listen(engine.pool, "soft_invalidate", lambda *_: seen.append(1))  # pyright: ignore[reportUnknownLambdaType, reportUnknownArgumentType]
    return seen


def test_watch_connection_loss_storage_connection_expect_invalidated(
    sqlite_engine: Engine,
) -> None:
    """Asyncpg's stuck-protocol error on a storage connection discards the connection."""
    storage_engine = watch_connection_loss(sqlite_engine)
    invalidated = _invalidations(sqlite_engine)
    with storage_engine.connect() as connection:
        with pytest.raises(asyncpg.exceptions.InternalClientError):
            connection.execute(text("SELECT 1 /*fail*/"))
        assert connection.invalidated
    assert invalidated, "the pool must not hand this connection out again"


def test_watch_connection_loss_application_connection_expect_dialect_rules_kept(
    sqlite_engine: Engine,
) -> None:
    """The application's connections on the same engine keep their dialect's rules."""
    watch_connection_loss(sqlite_engine)
    watch_connection_loss(sqlite_engine)  # idempotent: one listener per engine
    with sqlite_engine.connect() as connection:
        with pytest.raises(asyncpg.exceptions.InternalClientError):
            connection.execute(text("SELECT 1 /*fail*/"))
        assert not connection.invalidated
