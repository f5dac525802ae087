"""Telling a lost database connection from other errors, and never reusing one.

After a database restart every pooled connection is dead. The dialects
recognise most such errors as disconnects (SQLAlchemy then discards the
connection and every older one in the pool), but not all: asyncpg's
"cannot switch to state ...; another operation is in progress" and a few
shutdown states leave a dead connection in the pool, handed out again and
again. `watch_connection_loss` makes the storage's own connections treat
those as disconnects too; the storage maps all of them to
`OutboxStorageUnavailableError`, which the relay rides out with backoff.
"""

from spakky.outbox.error import OutboxStorageUnavailableError
from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

STORAGE_CONNECTION = "spakky_outbox_storage"
"""Execution option marking the storage's own connections (not the application's)."""

_PG_LOST = frozenset({"57P01", "57P02", "57P03"})
"""SQLSTATEs of a server shutting down, crashed, or not accepting yet (class 08 too)."""
_MYSQL_LOST = frozenset({1053, 1927, 2002, 2003, 2006, 2013, 2014, 2045, 2055, 4031})
"""MySQL/MariaDB client and server codes of a lost or impossible connection."""


def _causes(error: BaseException) -> list[BaseException]:
    """``error``, the driver error it wraps, and their explicit causes."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.orig if isinstance(current, DBAPIError) else current.__cause__
    return chain


def _lost(error: BaseException) -> bool:
    if isinstance(error, OSError):  # refused, reset, broken pipe, timed out
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in _PG_LOST):
        return True
    kind = type(error)
    if kind.__name__ == "InternalClientError" and "asyncpg" in kind.__module__:
        # asyncpg's protocol is stuck mid-operation: the connection is unusable.
        return True
    code = error.args[0] if error.args else None
    return "mysql" in kind.__module__ and isinstance(code, int) and code in _MYSQL_LOST


def connection_lost(error: BaseException) -> bool:
    """Whether ``error`` means the connection to the database was lost or refused."""
    return any(_lost(cause) for cause in _causes(error))


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` means the database cannot be used right now."""
    return connection_lost(error) or isinstance(error, (OperationalError, InterfaceError))


def unavailable(error: BaseException) -> OutboxStorageUnavailableError:
    """Our error for an outage, naming the driver's error."""
    cause = error.orig if isinstance(error, DBAPIError) else error
    return OutboxStorageUnavailableError(f"{type(cause).__name__}: {cause}")


def _treat_loss_as_disconnect(context: ExceptionContext) -> None:
    connection = context.connection
    if context.is_disconnect or connection is None:
        return
    if not connection.get_execution_options().get(STORAGE_CONNECTION):
        return  # the application's connections keep their dialect's rules
    if connection_lost(context.original_exception):
        # SQLAlchemy then discards this connection and every older pooled one.
        context.is_disconnect = True


def watch_connection_loss[E: (Engine, AsyncEngine)](engine: E) -> E:
    """Return ``engine`` for the storage's own use, its lost connections never reused.

    The returned engine shares the pool; only its connections get the wider
    disconnect rule.
    """
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if not event.contains(sync, "handle_error", _treat_loss_as_disconnect):
        event.listen(sync, "handle_error", _treat_loss_as_disconnect)
    return engine.execution_options(**{STORAGE_CONNECTION: True})
