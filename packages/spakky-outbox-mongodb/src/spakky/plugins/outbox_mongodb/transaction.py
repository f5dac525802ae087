"""Spakky transactions over a MongoDB session bound to the current context.

A ``@Transactional()`` use case starts a ``ClientSession`` and a transaction.
Business repositories pass `current_async_session()` (or `current_session()`)
to their own collection calls, on the session's client; the outbox ``save``
inserts through the same session, so business documents and messages commit
or abort together. Where the installed PyMongo has ``ClientSession.bind()``
(4.17+), the session is also bound, so calls on that client inside the use
case join the transaction even without ``session=``; calls on *another*
client then fail (PyMongo's rule), so use the session's client.

Transactions need a replica set or a sharded cluster. A transaction lives at
most 60 s by default, and one session must not serve concurrent operations
(no ``asyncio.gather`` over writes inside a use case).
"""

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, override

from pymongo.client_session import ClientSession
from pymongo.errors import ConnectionFailure, PyMongoError
from spakky.core.pod.annotations.pod import Pod
from spakky.data.persistency.transaction import (
    AbstractAsyncTransaction,
    AbstractTransaction,
)
from spakky.outbox.backend.transaction import TransactionScope, TransactionScopes
from spakky.outbox.backend.wakeup import WakeUpHub
from spakky.outbox.error import OutboxStorageUnavailableError
from spakky.outbox.inbox.error import InboxConflictError
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.config import MongoOutboxConfig
from spakky.plugins.outbox_mongodb.driver import is_motor, maybe_await
from spakky.plugins.outbox_mongodb.error import (
    MongoTransactionNotActiveError,
    MongoTransactionRetryableError,
)

logger = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 3
"""Commits tried while MongoDB answers ``UnknownTransactionCommitResult`` (a commit is idempotent)."""


@dataclass
class _Scope[S](TransactionScope[S]):
    """One open transaction in a context: its session, bind context and wake-up hubs."""

    bound: Any = None
    """The entered ``session.bind()`` context, when the driver has one."""
    hubs: set[WakeUpHub] = field(default_factory=set[WakeUpHub])
    """Outboxes this transaction saved into, signalled after the commit."""
    inbox_checks: list[Callable[[], Any]] = field(default_factory=list[Callable[[], Any]])
    """One per inbox record written here: whether another transaction committed it (awaitable in asyncio)."""

    @property
    def session(self) -> S:
        """The session the transaction runs in."""
        return self.resource


_async_scopes = TransactionScopes[_Scope[Any]]("spakky_outbox_mongodb_async_transaction")
_sync_scopes = TransactionScopes[_Scope[ClientSession]]("spakky_outbox_mongodb_transaction")


def current_async_session() -> Any:
    """Return the session of the asyncio transaction open in this context.

    Pass it to your own calls on its client (``session.client``)::

        session = current_async_session()
        orders = session.client["shop"]["orders"]
        await orders.insert_one(order, session=session)

    It is PyMongo's ``AsyncClientSession``, or Motor's session with
    ``SPAKKY_OUTBOX_MONGODB__DRIVER=motor``.

    Raises:
        MongoTransactionNotActiveError: No `AsyncMongoTransaction` is open here.
    """
    return _async_scopes.required(MongoTransactionNotActiveError).session


def current_session() -> ClientSession:
    """Return the session of the synchronous transaction open in this context.

    Raises:
        MongoTransactionNotActiveError: No `MongoTransaction` is open here.
    """
    return _sync_scopes.required(MongoTransactionNotActiveError).session


def current_async_scope() -> _Scope[Any] | None:
    """The asyncio transaction open in this context (for the outbox ``save``)."""
    return _async_scopes.current()


def current_scope() -> _Scope[ClientSession] | None:
    """The synchronous transaction open in this context (for the outbox ``save``)."""
    return _sync_scopes.current()


def translate_error(error: PyMongoError) -> Exception:
    """Our error for a transient or connection failure; ``error`` itself otherwise."""
    if error.has_error_label("TransientTransactionError"):
        return MongoTransactionRetryableError(
            f"TransientTransactionError ({error}): MongoDB aborted the transaction, "
            "nothing of the use case was written; run the use case again"
        )
    if error.has_error_label("UnknownTransactionCommitResult"):
        return MongoTransactionRetryableError(
            f"UnknownTransactionCommitResult ({error}) after {COMMIT_ATTEMPTS} commit "
            "attempts: the use case may or may not be stored; check its business "
            "documents before running it again"
        )
    if isinstance(error, ConnectionFailure):
        return OutboxStorageUnavailableError(str(error))
    return error


def _commit_failed(error: PyMongoError, attempt: int) -> bool:
    """Whether to give up on the commit (``False``: retry it)."""
    return not error.has_error_label("UnknownTransactionCommitResult") or attempt >= COMMIT_ATTEMPTS


def _inbox_conflict(error: PyMongoError) -> InboxConflictError:
    """`InboxConflictError` for a failed commit whose inbox record another transaction committed."""
    return InboxConflictError(f"the commit failed ({error}) and the inbox record is stored by another transaction")


async def _async_commit_error(scope: _Scope[Any], error: PyMongoError) -> Exception:
    """The error a failed asyncio commit raises.

    A server that detects a write conflict only at commit (the mongoeco
    engine; a real server fails the inbox insert itself) tells no more than
    "write conflict": when one of the transaction's inbox records is now
    stored, another consumer instance won the race.
    """
    if not error.has_error_label("UnknownTransactionCommitResult"):
        for check in scope.inbox_checks:
            if await check():
                return _inbox_conflict(error)
    return translate_error(error)


def _commit_error(scope: _Scope[ClientSession], error: PyMongoError) -> Exception:
    """The error a failed synchronous commit raises (see `_async_commit_error`)."""
    if not error.has_error_label("UnknownTransactionCommitResult"):
        for check in scope.inbox_checks:
            if check():
                return _inbox_conflict(error)
    return translate_error(error)


def _signal(scope: _Scope[Any]) -> None:
    for hub in scope.hubs:
        hub.signal()


@Pod()
class AsyncMongoTransaction(AbstractAsyncTransaction):
    """Asyncio transaction: a MongoDB session and transaction for the use case.

    Nested transactions in one context join the outermost one, which alone
    commits (or aborts). The session always ends, whatever happened.
    """

    def __init__(
        self, config: MongoOutboxConfig, connections: MongoOutboxConnectionManager
    ) -> None:
        """Bind the transaction to the outbox's clients."""
        super().__init__(autocommit=config.autocommit)
        self._connections = connections

    @override
    async def initialize(self) -> None:
        """Start a session and a transaction in this context, or join the open one."""
        if _async_scopes.join():
            return
        client = self._connections.async_client
        session = await maybe_await(client.start_session())
        self._connections.open_sessions += 1
        scope = _Scope[Any](session)
        try:
            await maybe_await(session.start_transaction(**self._connections.transaction_options()))
            bind: Callable[..., AbstractAsyncContextManager[Any]] | None = (
                None if is_motor(client) else getattr(session, "bind", None)
            )
            if bind is not None:
                scope.bound = bind(end_session=False)
                await scope.bound.__aenter__()
        except BaseException:
            await self._end(scope)
            raise
        _async_scopes.open(scope)

    @override
    async def commit(self) -> None:
        """Commit (outermost transaction only), retrying an unknown commit result."""
        scope = _async_scopes.commit()
        if scope is None:
            return
        if scope.rollback_only:
            await self._abort(scope)
            return
        attempt = 1
        while True:
            try:
                await scope.session.commit_transaction()
                break
            except PyMongoError as error:
                if _commit_failed(error, attempt):
                    raise await _async_commit_error(scope, error) from error
                attempt += 1
        _signal(scope)

    @override
    async def rollback(self) -> None:
        """Abort; an inner rollback dooms the outer transaction."""
        scope = _async_scopes.rollback()
        if scope is not None:
            await self._abort(scope)

    @override
    async def dispose(self) -> None:
        """Leave the transaction; the outermost one unbinds and ends its session."""
        scope = _async_scopes.dispose()
        if scope is not None:
            await self._end(scope)

    @staticmethod
    async def _abort(scope: _Scope[Any]) -> None:
        # Spakky calls rollback before dispose without a finally: never raise
        # here, or the session would never end; the server aborts it anyway.
        if not scope.session.in_transaction:
            return
        try:
            await scope.session.abort_transaction()
        except PyMongoError:
            logger.warning("MongoDB abortTransaction failed; the server aborts it on timeout", exc_info=True)

    async def _end(self, scope: _Scope[Any]) -> None:
        try:
            if scope.bound is not None:
                await scope.bound.__aexit__(None, None, None)
        finally:
            self._connections.open_sessions -= 1
            try:
                await maybe_await(scope.session.end_session())
            except PyMongoError:
                logger.warning("MongoDB endSession failed", exc_info=True)


@Pod()
class MongoTransaction(AbstractTransaction):
    """Synchronous transaction: a PyMongo session and transaction for the use case."""

    def __init__(
        self, config: MongoOutboxConfig, connections: MongoOutboxConnectionManager
    ) -> None:
        """Bind the transaction to the outbox's clients."""
        super().__init__(autocommit=config.autocommit)
        self._connections = connections

    @override
    def initialize(self) -> None:
        """Start a session and a transaction in this context, or join the open one."""
        if _sync_scopes.join():
            return
        session = self._connections.client.start_session()
        self._connections.open_sessions += 1
        scope = _Scope[ClientSession](session)
        try:
            session.start_transaction(**self._connections.transaction_options())
            bind: Callable[..., AbstractContextManager[Any]] | None = getattr(session, "bind", None)
            if bind is not None:
                scope.bound = bind(end_session=False)
                scope.bound.__enter__()
        except BaseException:
            self._end(scope)
            raise
        _sync_scopes.open(scope)

    @override
    def commit(self) -> None:
        """Commit (outermost transaction only), retrying an unknown commit result."""
        scope = _sync_scopes.commit()
        if scope is None:
            return
        if scope.rollback_only:
            self._abort(scope)
            return
        attempt = 1
        while True:
            try:
                scope.session.commit_transaction()
                break
            except PyMongoError as error:
                if _commit_failed(error, attempt):
                    raise _commit_error(scope, error) from error
                attempt += 1
        _signal(scope)

    @override
    def rollback(self) -> None:
        """Abort; an inner rollback dooms the outer transaction."""
        scope = _sync_scopes.rollback()
        if scope is not None:
            self._abort(scope)

    @override
    def dispose(self) -> None:
        """Leave the transaction; the outermost one unbinds and ends its session."""
        scope = _sync_scopes.dispose()
        if scope is not None:
            self._end(scope)

    @staticmethod
    def _abort(scope: _Scope[ClientSession]) -> None:
        if not scope.session.in_transaction:
            return
        try:
            scope.session.abort_transaction()
        except PyMongoError:
            logger.warning("MongoDB abortTransaction failed; the server aborts it on timeout", exc_info=True)

    def _end(self, scope: _Scope[ClientSession]) -> None:
        try:
            if scope.bound is not None:
                scope.bound.__exit__(None, None, None)
        finally:
            self._connections.open_sessions -= 1
            try:
                scope.session.end_session()
            except PyMongoError:
                logger.warning("MongoDB endSession failed", exc_info=True)
