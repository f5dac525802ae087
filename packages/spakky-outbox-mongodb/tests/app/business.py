"""The MongoDB business writes of the shared test applications: documents beside the outbox, in the transaction's session."""

from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.testing.events import OrderPlaced
from spakky.outbox.testing.inbox_app import IBookings
from spakky.outbox.testing.outbox_app import IOrders
from spakky.plugins.outbox_mongodb.config import MongoOutboxConfig
from spakky.plugins.outbox_mongodb.transaction import (
    current_async_session,
    current_session,
)


@Pod()
class MongoBusiness(IOrders, IBookings):
    """Inserts order and booking documents beside the outbox, in its database and the transaction's session."""

    def __init__(self, config: MongoOutboxConfig) -> None:
        """Write beside the outbox, in its database."""
        self._database = config.database

    @override
    async def add(self, order: OrderPlaced) -> None:
        """Insert the order document."""
        session = current_async_session()
        document = {"_id": order.order_id, "customer_id": order.customer_id}
        await session.client[self._database]["orders"].insert_one(document, session=session)

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
