# Sync twin generated from packages/spakky-outbox/src/spakky/outbox/testing/async_memory_inbox.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): 84af27561967e34abd8e3f338396859bb1e59f2cdbcc255f9d38d960b2d7fb23
"""The in-memory reference inbox of the sync flavour, on `InMemoryOutboxState`.

Its records commit with the in-memory transaction's business writes and
messages; a record another transaction committed first fails the commit
(`InboxConflictError`), the optimistic way a Redis WATCH does.
"""

from datetime import datetime
from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.inbox.identity import inbox_key
from spakky.outbox.ports.inbox import IInboxStorage, InboxLease, InboxStats
from spakky.outbox.testing.memory_state import InMemoryOutboxState


@Pod()
class InMemoryInboxStorage(IInboxStorage):
    """Synchronous in-memory inbox."""

    def __init__(self, state: InMemoryOutboxState) -> None:
        """Bind to the application's shared in-memory state."""
        self._state = state

    @override
    def record(self, consumer: str, message_id: str) -> bool:
        return self._state.record_inbox(inbox_key(consumer, message_id))

    @override
    def acquire_lease(self, consumer: str, message_id: str, lease_seconds: float) -> InboxLease:
        return self._state.acquire_lease(inbox_key(consumer, message_id), lease_seconds)

    @override
    def finish_lease(self, consumer: str, message_id: str, token: str) -> bool:
        return self._state.finish_lease(inbox_key(consumer, message_id), token)

    @override
    def release_lease(self, consumer: str, message_id: str, token: str) -> None:
        self._state.release_lease(inbox_key(consumer, message_id), token)

    @override
    def purge(self, before: datetime, limit: int = 10_000) -> int:
        return self._state.purge_inbox(before, limit)

    @override
    def stats(self) -> InboxStats:
        return self._state.inbox_stats()

    @override
    def location(self) -> str:
        return "in-memory"
