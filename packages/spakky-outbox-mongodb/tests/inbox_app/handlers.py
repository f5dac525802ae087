"""The MongoDB business write of the shared inbox test application: booking documents in the handler's transaction."""

from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.testing.inbox_app import IBookings
from spakky.plugins.outbox_mongodb.config import MongoOutboxConfig
from spakky.plugins.outbox_mongodb.transaction import (
    current_async_session,
    current_session,
)


@Pod()
class MongoBookings(IBookings):
    """Inserts a booking document beside the outbox, in its database and the handler's session."""

    def __init__(self, config: MongoOutboxConfig) -> None:
        """Write beside the outbox, in its database."""
        self._database = config.database

    @override
    async def book(self, order_id: str, run: int) -> None:
        """Insert an async booking."""
        session = current_async_session()
        await session.client[self._database]["bookings"].insert_one({"order_id": order_id, "run": run}, session=session)

    @override
    def book_sync(self, order_id: str, run: int) -> None:
        """Insert a sync booking."""
        session = current_session()
        session.client[self._database]["sync_bookings"].insert_one({"order_id": order_id, "run": run}, session=session)
