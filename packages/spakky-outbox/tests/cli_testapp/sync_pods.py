"""Pods giving an application only a sync storage over the shared outbox (``--scan cli_testapp.sync_pods``).

A sync-only custom storage, as an app written for a sync stack registers:
there is no `IAsyncOutboxStorage` at all. spakky-data's transactional aspects
want both transaction flavours in any app, so both are here.
"""

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.testing import memory

from cli_testapp import store


@Pod()
def cli_sync_only_outbox_storage(config: OutboxConfig) -> store.TargetedSyncInMemoryOutboxStorage:
    """The sync storage over the shared state, telling the command `store.TARGET`."""
    return store.TargetedSyncInMemoryOutboxStorage(store.STATE, config)


@Pod()
def cli_sync_only_transaction() -> memory.InMemoryTransaction:
    """The transaction ``@Transactional()`` opens over the shared state."""
    return memory.InMemoryTransaction(store.STATE)


@Pod()
def cli_sync_only_async_transaction() -> memory.AsyncInMemoryTransaction:
    """The async transaction spakky-data's async aspect needs in every app."""
    return memory.AsyncInMemoryTransaction(store.STATE)
