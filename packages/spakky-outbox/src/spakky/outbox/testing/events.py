"""A sample integration event for a backend's application tests: an order, keyed by its customer."""

from spakky.core.common.mutability import immutable
from spakky.domain.models.event import AbstractIntegrationEvent


class OrderRejectedError(Exception):
    """Raised by a test's use case after publishing, to prove its transaction rolls back."""


@immutable
class OrderPlaced(AbstractIntegrationEvent):
    """Integration event: leaves the service through the outbox."""

    order_id: str
    customer_id: str

    @property
    def partition_key(self) -> str | None:
        """Orders of one customer keep their order on the broker."""
        return self.customer_id
