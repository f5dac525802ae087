"""The conformance harness for `ListOutboxStorage`."""

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import override

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
        """Create an empty database; storages use the harness's claim timeout (`outbox_config`)."""
        self.database = Database()

    @override
    def new_storage(self) -> ListOutboxStorage:
        return ListOutboxStorage(self.database, self.outbox_config())

    @override
    @asynccontextmanager
    async def business_transaction(self, business_key: str) -> AsyncGenerator[None]:
        # The same transaction a @Transactional() use case opens; write() saves inside it.
        async with AsyncListTransaction(self.database):
            self.database.write(business_key, True)
            yield

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
