# Sync twin generated from packages/spakky-outbox-redis/src/spakky/plugins/outbox_redis/async_transaction.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): 9ec287f683df1e8a5d196c7eca05693f6cbe94254b93fdfed0b387da5ecccb9b
"""The Redis transaction of the sync flavour: a MULTI/EXEC pipeline executed at commit."""

from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.data.persistency.transaction import AbstractTransaction
from spakky.outbox.backend.transaction import TransactionScope
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.pipelines import open_pipeline, scopes


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
        """Send the queued commands in one MULTI/EXEC (outermost transaction only)."""
        scope = scopes.commit()
        if scope is None:
            return
        if scope.rollback_only:
            scope.resource.reset()
        else:
            scope.resource.execute()

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
