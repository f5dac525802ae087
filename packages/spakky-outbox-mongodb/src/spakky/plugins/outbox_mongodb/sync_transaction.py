# Sync twin generated from packages/spakky-outbox-mongodb/src/spakky/plugins/outbox_mongodb/async_transaction.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): ae58fc3df7f581c8280b08382881b67d96e3f8e48d311b8d5eda657c19a35383
"""The MongoDB transaction of the sync flavour, and the session it opens in a context.

`spakky.plugins.outbox_mongodb.transaction` exports both flavours.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, override

from pymongo.errors import PyMongoError
from spakky.core.pod.annotations.pod import Pod
from spakky.data.persistency.transaction import AbstractTransaction
from spakky.outbox.backend.transaction import TransactionScopes
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.config import MongoOutboxConfig
from spakky.plugins.outbox_mongodb.driver import Session, is_motor, resolved
from spakky.plugins.outbox_mongodb.error import MongoTransactionNotActiveError
from spakky.plugins.outbox_mongodb.transaction_base import (
    Scope,
    commit_failed,
    inbox_conflict,
    logger,
    signal,
    translate_error,
)

_scopes = TransactionScopes[Scope[Session]]("spakky_outbox_mongodb_async_transaction")


def current_session() -> Session:
    """Return the session of the sync transaction open in this context (see `Session`).

    Pass it to your own calls on its client (``session.client``), e.g.
    ``session.client["shop"]["orders"].insert_one(order, session=session)``.

    Raises:
        MongoTransactionNotActiveError: No `MongoTransaction` is open here.
    """
    return _scopes.required(MongoTransactionNotActiveError).session


def current_scope() -> Scope[Session] | None:
    """The synchronous transaction open in this context (for the outbox ``save``)."""
    return _scopes.current()


def _commit_error(scope: Scope[Session], error: PyMongoError) -> Exception:
    """The error a failed synchronous commit raises.

    A server that detects a write conflict only at commit (the mongoeco
    engine; a real server fails the inbox insert itself) tells no more than
    "write conflict": when one of the transaction's inbox records is now
    stored, another consumer instance won the race.
    """
    if not error.has_error_label("UnknownTransactionCommitResult"):
        for check in scope.inbox_checks:
            if check():
                return inbox_conflict(error)
    return translate_error(error)


@Pod()
class MongoTransaction(AbstractTransaction):
    """Synchronous transaction: a MongoDB session and transaction for the use case.

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
    def initialize(self) -> None:
        """Start a session and a transaction in this context, or join the open one."""
        if _scopes.join():
            return
        client = self._connections.client
        session = resolved(client.start_session())
        self._connections.open_sessions += 1
        scope = Scope[Session](session)
        try:
            resolved(session.start_transaction(**self._connections.transaction_options()))
            # Motor's session has no bind(); PyMongo's has it from 4.17.
            bind: Callable[..., AbstractContextManager[Any]] | None = (
                None if is_motor(client) else getattr(session, "bind", None)
            )
            if bind is not None:
                scope.bound = bind(end_session=False)
                scope.bound.__enter__()
        except BaseException:
            self._end(scope)
            raise
        _scopes.open(scope)

    @override
    def commit(self) -> None:
        """Commit (outermost transaction only), retrying an unknown commit result."""
        scope = _scopes.commit()
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
                if commit_failed(error, attempt):
                    raise _commit_error(scope, error) from error
                attempt += 1
        signal(scope)

    @override
    def rollback(self) -> None:
        """Abort; an inner rollback dooms the outer transaction."""
        scope = _scopes.rollback()
        if scope is not None:
            self._abort(scope)

    @override
    def dispose(self) -> None:
        """Leave the transaction; the outermost one unbinds and ends its session."""
        scope = _scopes.dispose()
        if scope is not None:
            self._end(scope)

    @staticmethod
    def _abort(scope: Scope[Session]) -> None:
        # Spakky calls rollback before dispose without a finally: never raise
        # here, or the session would never end; the server aborts it anyway.
        if not scope.session.in_transaction:
            return
        try:
            scope.session.abort_transaction()
        except PyMongoError:
            logger.warning("MongoDB abortTransaction failed; the server aborts it on timeout", exc_info=True)

    def _end(self, scope: Scope[Session]) -> None:
        try:
            if scope.bound is not None:
                scope.bound.__exit__(None, None, None)
        finally:
            self._connections.open_sessions -= 1
            try:
                resolved(scope.session.end_session())
            except PyMongoError:
                logger.warning("MongoDB endSession failed", exc_info=True)
