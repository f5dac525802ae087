"""Orders use case: the order row and its outbox row commit in one SQL transaction."""

import os

from spakky.core.stereotype.usecase import UseCase
from spakky.data.aspects.transactional import Transactional
from spakky.event.event_publisher import IAsyncEventPublisher
from spakky.plugins.sqlalchemy.persistency.session_manager import AsyncSessionManager
from sqlalchemy import text

from ..orders import E2eOrderPlaced, E2eOrderRejectedError

ORDERS_TABLE_ENV = "E2E_ORDERS_TABLE"
"""Environment variable naming the (per-run) orders table."""


@UseCase()
class E2eSqlPlaceOrderUseCase:
    """Inserts the order through the transaction's session and publishes `E2eOrderPlaced`."""

    def __init__(
        self, publisher: IAsyncEventPublisher, sessions: AsyncSessionManager
    ) -> None:
        """Inject the event publisher and spakky-sqlalchemy's session manager."""
        self._publisher = publisher
        self._sessions = sessions

    @Transactional()
    async def execute(
        self, order_id: str, customer_id: str, *, fail: bool = False
    ) -> None:
        """Place an order; ``fail`` raises after publishing so nothing commits."""
        table = os.environ[ORDERS_TABLE_ENV]  # a generated plain identifier
        await self._sessions.session.execute(
            text(f"INSERT INTO {table} (order_id, customer_id) VALUES (:o, :c)"),
            {"o": order_id, "c": customer_id},
        )
        await self._publisher.publish(
            E2eOrderPlaced(order_id=order_id, customer_id=customer_id)
        )
        if fail:
            raise E2eOrderRejectedError
