# Sync twin generated from packages/spakky-outbox-redis/src/spakky/plugins/outbox_redis/async_transaction.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): 7a63806343c9f8a11db1a0caf1465a53d48b9948a970acdcb5bd9b6c5d344479
"""The Redis transaction of the sync flavour: a MULTI/EXEC pipeline executed at commit."""

from typing import override

from redis.exceptions import WatchError
from spakky.core.pod.annotations.pod import Pod
from spakky.data.persistency.transaction import AbstractTransaction
from spakky.outbox.backend.transaction import TransactionScope
from spakky.outbox.error import OutboxStorageUnavailableError
from spakky.outbox.inbox.error import InboxConflictError
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.pipelines import open_pipeline, scopes
from spakky.plugins.outbox_redis.storage_base import UNAVAILABLE


@Pod()
class RedisTransaction(AbstractTransaction):
    """Synchronous transaction: a MULTI/EXEC pipeline executed at commit.

    Nested transactions in one context join the outermost one, which alone
    executes (or discards) the queued commands.
    """

    _connections: RedisOutboxConnectionManager

    def __init__(
        self, config: RedisOutboxConfig, connections: RedisOutboxConnectionManager
    ) -> None:
        """Bind the transaction to the outbox's Redis clients."""
        super().__init__(autocommit=config.autocommit)
        self._connections = connections

    @override
    def initialize(self) -> None:
        """Open a pipeline in this context, or join the one already open."""
        if not scopes.join():
            scopes.open(TransactionScope(open_pipeline(self._connections)))

    @override
    def commit(self) -> None:
        """Send the queued commands in one MULTI/EXEC (outermost transaction only).

        Raises:
            InboxConflictError: The inbox record this transaction WATCHed was
                written by another transaction first; nothing was written.
        """
        scope = scopes.commit()
        if scope is None:
            return
        if scope.rollback_only:
            scope.resource.reset()
            return
        try:
            scope.resource.execute()
        except WatchError as error:
            if isinstance(error.__context__, UNAVAILABLE):  # the watching connection broke
                raise OutboxStorageUnavailableError(str(error)) from error
            raise InboxConflictError(str(error)) from None

    @override
    def rollback(self) -> None:
        """Discard the queued commands; an inner rollback dooms the outer one."""
        scope = scopes.rollback()
        if scope is not None:
            scope.resource.reset()

    @override
    def dispose(self) -> None:
        """Leave the transaction; the outermost one releases its pipeline."""
        scope = scopes.dispose()
        if scope is not None:
            scope.resource.reset()
