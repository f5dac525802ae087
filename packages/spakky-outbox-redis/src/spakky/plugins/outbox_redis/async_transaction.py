"""The Redis transaction of the async flavour: a MULTI/EXEC pipeline executed at commit."""

from typing import override

from redis.exceptions import WatchError
from spakky.core.pod.annotations.pod import Pod
from spakky.data.persistency.transaction import AbstractAsyncTransaction
from spakky.outbox.backend.transaction import TransactionScope
from spakky.outbox.error import OutboxStorageUnavailableError
from spakky.outbox.inbox.error import InboxConflictError
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.pipelines import async_scopes, open_async_pipeline
from spakky.plugins.outbox_redis.storage_base import UNAVAILABLE


@Pod()
class AsyncRedisTransaction(AbstractAsyncTransaction):
    """Asyncio transaction: a MULTI/EXEC pipeline executed at commit.

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
    async def initialize(self) -> None:
        """Open a pipeline in this context, or join the one already open."""
        if not async_scopes.join():
            async_scopes.open(TransactionScope(await open_async_pipeline(self._connections)))

    @override
    async def commit(self) -> None:
        """Send the queued commands in one MULTI/EXEC (outermost transaction only).

        Raises:
            InboxConflictError: The inbox record this transaction WATCHed was
                written by another transaction first; nothing was written.
        """
        scope = async_scopes.commit()
        if scope is None:
            return
        if scope.rollback_only:
            await scope.resource.reset()
            return
        try:
            await scope.resource.execute()
        except WatchError as error:
            if isinstance(error.__context__, UNAVAILABLE):  # the watching connection broke
                raise OutboxStorageUnavailableError(str(error)) from error
            raise InboxConflictError(str(error)) from None

    @override
    async def rollback(self) -> None:
        """Discard the queued commands; an inner rollback dooms the outer one."""
        scope = async_scopes.rollback()
        if scope is not None:
            await scope.resource.reset()

    @override
    async def dispose(self) -> None:
        """Leave the transaction; the outermost one releases its pipeline."""
        scope = async_scopes.dispose()
        if scope is not None:
            await scope.resource.reset()
