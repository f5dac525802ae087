"""In-memory reference storage: passes every capability, doubles as a public fake.

One `InMemoryOutboxState` holds the messages (and, for tests, business records);
`InMemoryOutboxStorage` / `AsyncInMemoryOutboxStorage` are thin per-instance
views with their own owner token, standing for relay processes.
`InMemoryTransaction` / `AsyncInMemoryTransaction` give ``@Transactional()``
its commit and rollback, so saves join the business transaction. A save made
with no transaction open is written at once (documented standalone write).

The async storage and transaction are written once
(`spakky.outbox.testing.async_memory`); the sync ones are generated from them.
"""

import asyncio
from collections.abc import AsyncGenerator, Generator
from contextlib import asynccontextmanager, contextmanager
from typing import override

from spakky.outbox.common.figures import RelayFigures
from spakky.outbox.testing.async_memory import (
    AsyncInMemoryOutboxStorage,
    AsyncInMemoryTransaction,
)
from spakky.outbox.testing.harness import (
    AbstractOutboxHarness,
    Capability,
    RawOutboxRecord,
)
from spakky.outbox.testing.memory_state import (
    Clock,
    InMemoryOutboxState,
    ManualClock,
    system_clock,
)
from spakky.outbox.testing.sync_memory import InMemoryOutboxStorage, InMemoryTransaction

__all__ = [
    "AsyncInMemoryOutboxStorage",
    "AsyncInMemoryTransaction",
    "Clock",
    "InMemoryOutboxHarness",
    "InMemoryOutboxState",
    "InMemoryOutboxStorage",
    "InMemoryTransaction",
    "ManualClock",
    "system_clock",
]


class InMemoryOutboxHarness(AbstractOutboxHarness):
    """Conformance harness for the in-memory reference, on a manual clock."""

    name = "in-memory"
    capabilities = frozenset(Capability)
    claim_timeout_seconds = 3.0
    claim_lease_seconds = 1.0

    def __init__(self) -> None:
        """Create a fresh state on a manual clock."""
        self.state = InMemoryOutboxState()
        self.clock = ManualClock()
        self.state.clock = self.clock

    @override
    def new_storage(self) -> AsyncInMemoryOutboxStorage:
        return AsyncInMemoryOutboxStorage(self.state, self.outbox_config())

    @override
    def new_sync_storage(self) -> InMemoryOutboxStorage:
        return InMemoryOutboxStorage(self.state, self.outbox_config())

    @override
    @asynccontextmanager
    async def business_transaction(self, business_key: str) -> AsyncGenerator[None]:
        async with AsyncInMemoryTransaction(self.state):
            self.state.put_business(business_key, True)
            yield

    @override
    @contextmanager
    def business_transaction_sync(self, business_key: str) -> Generator[None]:
        with InMemoryTransaction(self.state):
            self.state.put_business(business_key, True)
            yield

    @override
    async def business_record_exists(self, business_key: str) -> bool:
        return business_key in self.state.business

    @override
    async def raw_records(self) -> list[RawOutboxRecord]:
        now = self.clock()
        return [
            RawOutboxRecord(
                id=r.message.id,
                event_name=r.message.event_name,
                payload=r.message.payload,
                headers=dict(r.message.headers),
                partition_key=r.message.partition_key,
                retry_count=r.retry_count,
                claimed=r.claimed_by is not None and r.claimed_at is not None and r.claimed_at <= now,
                published=r.published_at is not None,
                abandoned=r.abandoned_at is not None,
                last_error=r.last_error,
                created_at=r.message.created_at,
            )
            for r in self.state.records.values()
        ]

    @override
    async def raw_relay_figures(self) -> list[RelayFigures]:
        return list(self.state.figures)

    @override
    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await asyncio.sleep(0)
