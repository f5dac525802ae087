"""The conformance harness for `ListOutboxStorage`."""

from collections.abc import Sequence
from typing import override

from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.testing.harness import (
    AbstractOutboxHarness,
    Capability,
    RawOutboxRecord,
)

from examples.custom_backend.storage import (
    AsyncListTransaction,
    Database,
    ListOutboxStorage,
)


class ListOutboxHarness(AbstractOutboxHarness):
    """A fresh `Database` per test; raw state read straight from its rows."""

    name = "list-example"
    capabilities = frozenset({Capability.ASYNC_API, Capability.PARTITION_ORDERING})
    claim_timeout_seconds = 0.3

    def __init__(self) -> None:
        """Create an empty database; storages use the harness's claim timeout."""
        self.database = Database()
        self.config = OutboxConfig().model_copy(
            update={"claim_timeout_seconds": self.claim_timeout_seconds}
        )

    @override
    def new_storage(self) -> ListOutboxStorage:
        return ListOutboxStorage(self.database, self.config)

    @override
    async def write(
        self,
        messages: Sequence[OutboxMessage],
        *,
        commit: bool = True,
        business_key: str = "business",
    ) -> None:
        # The same transaction a @Transactional() use case opens.
        transaction = AsyncListTransaction(self.database)
        storage = self.new_storage()
        await transaction.initialize()
        try:
            self.database.write(business_key, True)
            for message in messages:
                await storage.save(message)
            if commit:
                await transaction.commit()
            else:
                await transaction.rollback()
        finally:
            await transaction.dispose()

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
                created_at=r.message.created_at,
            )
            for r in self.database.rows
        ]
