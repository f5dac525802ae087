"""The MongoDB transaction of the async flavour, and the session it opens in a context.

`spakky.plugins.outbox_mongodb.transaction` exports both flavours.
"""

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, override

from pymongo.errors import PyMongoError
from spakky.core.pod.annotations.pod import Pod
from spakky.data.persistency.transaction import AbstractAsyncTransaction
from spakky.outbox.backend.transaction import TransactionScopes
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.config import MongoOutboxConfig
from spakky.plugins.outbox_mongodb.driver import AsyncSession, is_motor, resolved_async
from spakky.plugins.outbox_mongodb.error import MongoTransactionNotActiveError
from spakky.plugins.outbox_mongodb.transaction_base import (
    Scope,
    commit_failed,
    inbox_conflict,
    logger,
    signal,
    translate_error,
)

_async_scopes = TransactionScopes[Scope[AsyncSession]]("spakky_outbox_mongodb_async_transaction")


def current_async_session() -> AsyncSession:
    """Return the session of the async transaction open in this context (see `AsyncSession`).

    Pass it to your own calls on its client (``session.client``), e.g.
    ``session.client["shop"]["orders"].insert_one(order, session=session)``.

    Raises:
        MongoTransactionNotActiveError: No `AsyncMongoTransaction` is open here.
    """
    return _async_scopes.required(MongoTransactionNotActiveError).session


def current_async_scope() -> Scope[AsyncSession] | None:
    """The asyncio transaction open in this context (for the outbox ``save``)."""
    return _async_scopes.current()


async def _async_commit_error(scope: Scope[AsyncSession], error: PyMongoError) -> Exception:
    """The error a failed asyncio commit raises.

    A server that detects a write conflict only at commit (the mongoeco
    engine; a real server fails the inbox insert itself) tells no more than
    "write conflict": when one of the transaction's inbox records is now
    stored, another consumer instance won the race.
    """
    if not error.has_error_label("UnknownTransactionCommitResult"):
        for check in scope.inbox_checks:
            if await check():
                return inbox_conflict(error)
    return translate_error(error)


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
        session = await resolved_async(client.start_session())
        self._connections.open_sessions += 1
        scope = Scope[AsyncSession](session)
        try:
            await resolved_async(session.start_transaction(**self._connections.transaction_options()))
            # Motor's session has no bind(); PyMongo's has it from 4.17.
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
                if commit_failed(error, attempt):
                    raise await _async_commit_error(scope, error) from error
                attempt += 1
        signal(scope)

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
    async def _abort(scope: Scope[AsyncSession]) -> None:
        # Spakky calls rollback before dispose without a finally: never raise
        # here, or the session would never end; the server aborts it anyway.
        if not scope.session.in_transaction:
            return
        try:
            await scope.session.abort_transaction()
        except PyMongoError:
            logger.warning("MongoDB abortTransaction failed; the server aborts it on timeout", exc_info=True)

    async def _end(self, scope: Scope[AsyncSession]) -> None:
        try:
            if scope.bound is not None:
                await scope.bound.__aexit__(None, None, None)
        finally:
            self._connections.open_sessions -= 1
            try:
                await resolved_async(scope.session.end_session())
            except PyMongoError:
                logger.warning("MongoDB endSession failed", exc_info=True)
