"""The integration event and error shared by the e2e order services."""

from spakky.core.common.mutability import immutable
from spakky.domain.models.event import AbstractIntegrationEvent


class E2eOrderRejectedError(Exception):
    """Raised by a use case after publishing, to force a rollback."""


@immutable
class E2eOrderPlaced(AbstractIntegrationEvent):
    """Integration event relayed to RabbitMQ (queue named after the class)."""

    order_id: str
    customer_id: str

    @property
    def partition_key(self) -> str | None:
        """Orders of one customer stay in order."""
        return self.customer_id
