"""Where the example keeps its orders: in the same store as the outbox."""

from abc import ABC, abstractmethod
from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.testing.memory import InMemoryOutboxState


class IOrderStore(ABC):
    """Writes orders inside the current transaction."""

    @abstractmethod
    async def add(self, order_id: str, customer_id: str, amount: int) -> None:
        """Write one order in the current transaction."""

    @abstractmethod
    async def count(self) -> int:
        """Return how many orders are committed."""


@Pod()
class InMemoryOrderStore(IOrderStore):
    """Orders kept beside the in-memory outbox, committed with it."""

    def __init__(self, state: InMemoryOutboxState) -> None:
        """Share the outbox's state, so orders and events commit together."""
        self._state = state

    @override
    async def add(self, order_id: str, customer_id: str, amount: int) -> None:
        self._state.put_business(f"order:{order_id}", (customer_id, amount))

    @override
    async def count(self) -> int:
        return sum(key.startswith("order:") for key in self._state.business)
