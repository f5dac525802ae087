"""The contract between the inbox conformance rules and an inbox under test, and the in-memory one."""

import asyncio
import contextvars
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import override

from spakky.outbox.ports.inbox import (
    IAsyncInboxStorage,
    IInboxStorage,
    InboxLease,
    InboxStats,
)
from spakky.outbox.testing.async_memory_inbox import AsyncInMemoryInboxStorage
from spakky.outbox.testing.memory_state import InMemoryOutboxState

type BeforeCommit = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class RawInboxRecord:
    """An inbox record as the store holds it, read without the inbox's methods."""

    consumer: str
    message_id: str
    leased: bool
    """True while a lease marks the handler unfinished."""


@dataclass(frozen=True)
class HandlerCall:
    """One handler call a rule asks for (`AbstractInboxHarness.handle`): what to record, write and await."""

    inbox: IAsyncInboxStorage
    consumer: str
    message_id: str
    effect: str
    fail: bool = False
    """Roll the transaction back instead of committing."""
    before_commit: BeforeCommit | None = None
    """Awaited after the effect is written, before the commit (or rollback)."""

    async def record(self) -> bool:
        """Record the message in the handler's transaction; True when it is new."""
        return await self.inbox.record(self.consumer, self.message_id)

    async def reach_commit(self) -> None:
        """Await ``before_commit``, when given."""
        if self.before_commit is not None:
            await self.before_commit()


class ThreadedInbox(IAsyncInboxStorage):
    """A sync inbox behind the async port, for running the rules on a sync flavour.

    Each call runs in a worker thread with a copy of the caller's context
    (``asyncio.to_thread``), so a ``record`` made inside a sync transaction
    bound in that context joins it.
    """

    def __init__(self, inbox: IInboxStorage) -> None:
        """Wrap the sync ``inbox``."""
        self.sync_inbox = inbox

    @override
    async def record(self, consumer: str, message_id: str) -> bool:
        return await asyncio.to_thread(self.sync_inbox.record, consumer, message_id)

    @override
    async def acquire_lease(self, consumer: str, message_id: str, lease_seconds: float) -> InboxLease:
        return await asyncio.to_thread(self.sync_inbox.acquire_lease, consumer, message_id, lease_seconds)

    @override
    async def finish_lease(self, consumer: str, message_id: str, token: str) -> bool:
        return await asyncio.to_thread(self.sync_inbox.finish_lease, consumer, message_id, token)

    @override
    async def release_lease(self, consumer: str, message_id: str, token: str) -> None:
        await asyncio.to_thread(self.sync_inbox.release_lease, consumer, message_id, token)

    @override
    async def purge(self, before: datetime, limit: int = 10_000) -> int:
        return await asyncio.to_thread(self.sync_inbox.purge, before, limit)

    @override
    async def stats(self) -> InboxStats:
        return await asyncio.to_thread(self.sync_inbox.stats)

    @override
    def location(self) -> str:
        return self.sync_inbox.location()


class AbstractInboxHarness(ABC):
    """One fresh, empty, isolated inbox (own table, collection or key prefix) for one test.

    A backend's ``conftest.py`` provides an ``inbox_harness`` fixture yielding
    an instance and calling `drop` afterwards.
    """

    name: str = "inbox"
    """Shown in failures."""
    lease_seconds: float = 0.5
    """A lease short enough for the rules to see it lapse."""

    @abstractmethod
    def inbox(self) -> IAsyncInboxStorage:
        """A new inbox instance, standing for one consumer process."""

    async def handle(
        self,
        inbox: IAsyncInboxStorage,
        consumer: str,
        message_id: str,
        effect: str,
        *,
        fail: bool = False,
        before_commit: BeforeCommit | None = None,
    ) -> bool:
        """Run one handler call in a business transaction of its own, in a fresh context (`run_handler`).

        Record the message; when new, write the business effect ``effect``;
        await ``before_commit``; roll back when ``fail``, else commit (a commit
        may raise `InboxConflictError`). Returns what ``record`` said.
        """
        call = HandlerCall(inbox, consumer, message_id, effect, fail, before_commit)
        return await asyncio.create_task(self.run_handler(call), context=contextvars.Context())

    @abstractmethod
    async def run_handler(self, call: HandlerCall) -> bool:
        """`handle`'s transaction, already in a fresh context: ``call.record()``, the effect when new, ``call.reach_commit()``, then roll back or commit."""

    @abstractmethod
    async def records(self) -> list[RawInboxRecord]:
        """Backdoor: every stored record."""

    @abstractmethod
    async def effects(self) -> list[str]:
        """Backdoor: every business effect committed, sorted."""

    @abstractmethod
    async def backdate(self, consumer: str, message_id: str, seconds: float) -> None:
        """Backdoor: make a record ``seconds`` older than it is."""

    async def drop(self) -> None:  # noqa: B027 - nothing to drop by default
        """Remove what the harness created."""


class InMemoryInboxHarness(AbstractInboxHarness):
    """The in-memory reference inbox on `InMemoryOutboxState`."""

    name = "in-memory"
    lease_seconds = 0.2

    def __init__(self) -> None:
        """A fresh state."""
        self.state = InMemoryOutboxState()

    def inbox(self) -> IAsyncInboxStorage:
        """A new view on the shared state."""
        return AsyncInMemoryInboxStorage(self.state)

    @override
    async def run_handler(self, call: HandlerCall) -> bool:
        """One transaction of the in-memory store, as `AsyncInMemoryTransaction` runs it."""
        state = self.state
        token = state.begin()
        try:
            ran = await call.record()
            if ran:
                state.put_business(f"effect:{call.effect}", call.effect)
            await call.reach_commit()
            if call.fail:
                state.rollback()
            else:
                state.commit()
            return ran
        finally:
            state.end(token)

    async def records(self) -> list[RawInboxRecord]:
        """Every record of the state."""
        return [
            RawInboxRecord(consumer=c, message_id=m, leased=e.lease_until is not None)
            for (c, m), e in sorted(self.state.inbox.items())
        ]

    async def effects(self) -> list[str]:
        """Every committed effect."""
        return sorted(str(v) for k, v in self.state.business.items() if k.startswith("effect:"))

    async def backdate(self, consumer: str, message_id: str, seconds: float) -> None:
        """Move the record's time back."""
        entry = self.state.inbox[(consumer, message_id)]
        entry.recorded_at -= timedelta(seconds=seconds)

