"""What the shop tells other services."""

from spakky.core.common.mutability import immutable
from spakky.domain.models.event import AbstractIntegrationEvent


@immutable
class OrderPlaced(AbstractIntegrationEvent):
    """An order was committed: leaves the service through the outbox."""

    order_id: str
    customer_id: str
    amount: int

    @property
    def partition_key(self) -> str | None:
        """One customer's orders arrive in the order they were placed."""
        return self.customer_id
