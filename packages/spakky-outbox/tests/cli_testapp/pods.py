"""Pods giving an application the shared in-memory outbox of `cli_testapp.store`.

Function Pods, because the storage classes already carry a Pod annotation
that scanning a subclass would pick up twice.
"""

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.testing import async_memory_inbox, memory

from cli_testapp import store


@Pod()
def cli_outbox_state() -> memory.InMemoryOutboxState:
    """The process-wide state."""
    return store.STATE


@Pod()
def cli_async_outbox_storage(config: OutboxConfig) -> store.TargetedInMemoryOutboxStorage:
    """The async storage over the shared state."""
    return store.TargetedInMemoryOutboxStorage(store.STATE, config)


@Pod()
def cli_outbox_storage(config: OutboxConfig) -> memory.InMemoryOutboxStorage:
    """The sync storage over the shared state (the sync outbox bus needs one)."""
    return memory.InMemoryOutboxStorage(store.STATE, config)


@Pod()
def cli_transaction() -> memory.InMemoryTransaction:
    """The transaction ``@Transactional()`` opens over the shared state."""
    return memory.InMemoryTransaction(store.STATE)


@Pod()
def cli_async_transaction() -> memory.AsyncInMemoryTransaction:
    """The async transaction over the shared state."""
    return memory.AsyncInMemoryTransaction(store.STATE)


@Pod()
def cli_async_inbox() -> async_memory_inbox.AsyncInMemoryInboxStorage:
    """The inbox over the shared state (``spakky-outbox inbox``)."""
    return async_memory_inbox.AsyncInMemoryInboxStorage(store.STATE)
