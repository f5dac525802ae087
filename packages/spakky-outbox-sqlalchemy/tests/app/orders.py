"""The SQL business write of the shared outbox test application: an ``orders`` row in the use case's transaction."""

from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.testing.events import OrderPlaced
from spakky.outbox.testing.outbox_app import IOrders
from spakky.plugins.sqlalchemy.persistency.session_manager import AsyncSessionManager
from sqlalchemy import text


@Pod()
class SqlOrders(IOrders):
    """Inserts the order row through the application's session."""

    def __init__(self, sessions: AsyncSessionManager) -> None:
        """Write through the transaction's session."""
        self._sessions = sessions

    @override
    async def add(self, order: OrderPlaced) -> None:
        """Insert the order row."""
        insert = text("INSERT INTO orders (order_id, customer_id) VALUES (:o, :c)")
        await self._sessions.session.execute(insert, {"o": order.order_id, "c": order.customer_id})
