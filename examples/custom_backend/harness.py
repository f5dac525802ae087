"""The conformance harness for `ListOutboxStorage`."""

from collections.abc import Sequence
from typing import override

from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.testing.harness import (
    AbstractOutboxHarness,
    Capability,
    RawOutboxRecord,
)

from examples.custom_backend.storage import (
    CURRENT,
    Database,
    ListOutboxStorage,
    UnitOfWork,
)


class ListOutboxHarness(AbstractOutboxHarness):
    """A fresh `Database` per test; raw state read straight from its rows."""

    name = "list-example"
    capabilities = frozenset({Capability.ASYNC_API, Capability.PARTITION_ORDERING})
    claim_timeout_seconds = 0.3

    def __init__(self) -> None:
        """Create an empty database."""
        self.database = Database()

    @override
    def new_storage(self) -> ListOutboxStorage:
        return ListOutboxStorage(self.database, self.claim_timeout_seconds)

    @override
    async def write(
        self,
        messages: Sequence[OutboxMessage],
        *,
        commit: bool = True,
        business_key: str = "business",
    ) -> None:
        work = UnitOfWork()
        token = CURRENT.set(work)
        try:
            work.business[business_key] = True
            storage = self.new_storage()
            for message in messages:
                await storage.save(message)
            if commit:
                self.database.commit(work)
        finally:
            CURRENT.reset(token)

    @override
    async def business_record_exists(self, business_key: str) -> bool:
        return business_key in self.database.business

    @override
    async def raw_records(self) -> list[RawOutboxRecord]:
        return [
            RawOutboxRecord(
                id=r.message.id,
                event_name=r.message.event_name,
                payload=r.message.payload,
                headers=r.message.headers,
                partition_key=r.message.partition_key,
                retry_count=r.retries,
                claimed=r.claimed_at is not None,
                published=r.published,
                abandoned=r.abandoned,
                last_error=None,
            )
            for r in self.database.rows
        ]

    @override
    async def save_outside_transaction(self, message: OutboxMessage) -> bool:
        await self.new_storage().save(message)  # raises OutboxTransactionRequiredError
        return True
