"""The contract between the inbox conformance rules and an inbox under test, and the in-memory one."""

import asyncio
import contextvars
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from spakky.outbox.ports.inbox import IAsyncInboxStorage
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

    @abstractmethod
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
        """Run one handler call in a business transaction of its own (own context).

        Record the message; when new, write the business effect ``effect``;
        await ``before_commit``; roll back when ``fail``, else commit (a commit
        may raise `InboxConflictError`). Returns what ``record`` said.
        """

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
        """One transaction of the in-memory store, as `AsyncInMemoryTransaction` runs it."""
        state = self.state

        async def run() -> bool:
            token = state.begin()
            try:
                ran = await inbox.record(consumer, message_id)
                if ran:
                    state.put_business(f"effect:{effect}", effect)
                if before_commit is not None:
                    await before_commit()
                if fail:
                    state.rollback()
                else:
                    state.commit()
                return ran
            finally:
                state.end(token)

        return await asyncio.create_task(run(), context=contextvars.Context())

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

