"""The in-memory reference inbox of the async flavour, on `InMemoryOutboxState`.

Its records commit with the in-memory transaction's business writes and
messages; a record another transaction committed first fails the commit
(`InboxConflictError`), the optimistic way a Redis WATCH does.
"""

from datetime import datetime
from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.inbox.identity import inbox_key
from spakky.outbox.ports.inbox import IAsyncInboxStorage, InboxLease, InboxStats
from spakky.outbox.testing.memory_state import InMemoryOutboxState


@Pod()
class AsyncInMemoryInboxStorage(IAsyncInboxStorage):
    """Asynchronous in-memory inbox."""

    def __init__(self, state: InMemoryOutboxState) -> None:
        """Bind to the application's shared in-memory state."""
        self._state = state

    @override
    async def record(self, consumer: str, message_id: str) -> bool:
        return self._state.record_inbox(inbox_key(consumer, message_id))

    @override
    async def acquire_lease(self, consumer: str, message_id: str, lease_seconds: float) -> InboxLease:
        return self._state.acquire_lease(inbox_key(consumer, message_id), lease_seconds)

    @override
    async def finish_lease(self, consumer: str, message_id: str, token: str) -> bool:
        return self._state.finish_lease(inbox_key(consumer, message_id), token)

    @override
    async def release_lease(self, consumer: str, message_id: str, token: str) -> None:
        self._state.release_lease(inbox_key(consumer, message_id), token)

    @override
    async def purge(self, before: datetime, limit: int = 10_000) -> int:
        return self._state.purge_inbox(before, limit)

    @override
    async def stats(self) -> InboxStats:
        return self._state.inbox_stats()

    @override
    def location(self) -> str:
        return "in-memory"
