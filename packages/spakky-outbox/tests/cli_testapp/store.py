"""The shared in-memory state, and a storage whose target a test chooses (not scanned)."""

from typing import override

from spakky.outbox.common.stats import OutboxTarget
from spakky.outbox.testing.memory import (
    AsyncInMemoryOutboxStorage,
    InMemoryOutboxState,
    InMemoryOutboxStorage,
)

STATE = InMemoryOutboxState()
"""The outbox every application built with ``cli_testapp.pods`` in this process uses."""
TARGET = OutboxTarget(backend="in-memory", location="cli_testapp.store.STATE")
"""What `TargetedInMemoryOutboxStorage.target` returns; tests replace it."""


class TargetedInMemoryOutboxStorage(AsyncInMemoryOutboxStorage):
    """The in-memory storage, telling the command the location a test set in `TARGET`."""

    @override
    def target(self) -> OutboxTarget:
        return TARGET


class TargetedSyncInMemoryOutboxStorage(InMemoryOutboxStorage):
    """The sync in-memory storage, telling the command the location a test set in `TARGET`."""

    @override
    def target(self) -> OutboxTarget:
        return TARGET


def reset() -> None:
    """Forget every message and restore the default target."""
    global TARGET
    STATE.records.clear()
    STATE.inbox.clear()
    TARGET = OutboxTarget(backend="in-memory", location="cli_testapp.store.STATE")
