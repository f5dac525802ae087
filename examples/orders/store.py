"""Where the example keeps its orders: a table in the same SQLite file as the outbox."""

from abc import ABC, abstractmethod
from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.plugins.sqlalchemy.persistency.session_manager import AsyncSessionManager
from sqlalchemy import Column, Integer, MetaData, String, Table, insert

metadata = MetaData()
orders = Table(
    "orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("amount", Integer, nullable=False),
)


class IOrderStore(ABC):
    """Writes orders inside the current transaction."""

    @abstractmethod
    async def add(self, order_id: str, customer_id: str, amount: int) -> None:
        """Write one order in the current transaction."""


@Pod()
class SqlOrderStore(IOrderStore):
    """Orders written through the session ``@Transactional()`` opened."""

    def __init__(self, sessions: AsyncSessionManager) -> None:
        """Use spakky-sqlalchemy's context-scoped session, shared with the outbox."""
        self._sessions = sessions

    @override
    async def add(self, order_id: str, customer_id: str, amount: int) -> None:
        await self._sessions.session.execute(
            insert(orders).values(order_id=order_id, customer_id=customer_id, amount=amount)
        )


