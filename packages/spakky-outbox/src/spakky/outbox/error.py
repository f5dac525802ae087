"""Outbox error classes."""

from abc import ABC

from spakky.core.common.error import AbstractSpakkyFrameworkError
from spakky.event.error import EventDeliveryRejectedError, EventTransportNotRunningError


class AbstractSpakkyOutboxError(AbstractSpakkyFrameworkError, ABC):
    """Base exception for Spakky Outbox errors."""

    def __init__(self, detail: str | None = None) -> None:
        """Build the error, appending an optional detail to the class message."""
        self.detail = detail
        super().__init__(self.message if detail is None else f"{self.message}: {detail}")


class OutboxSerializationError(AbstractSpakkyOutboxError):
    """Raised when an integration event cannot be serialised into an outbox message."""

    message = "Integration event cannot be serialised for the outbox"

    def __init__(self, event_type: type, field: str, reason: str) -> None:
        """Name the event type and the field that failed."""
        self.event_type = event_type
        self.field = field
        self.reason = reason
        super().__init__(
            f"{event_type.__module__}.{event_type.__qualname__}.{field}: {reason}. "
            "Give the field a JSON-serialisable type (str, int, float, bool, "
            "UUID, datetime, a pydantic model or a dataclass of those)"
        )


class InvalidOutboxMessageError(AbstractSpakkyOutboxError):
    """Raised when a message cannot be stored because a field has the wrong type."""

    message = "Outbox message cannot be stored"


class InvalidOutboxConfigError(AbstractSpakkyOutboxError):
    """Raised when an ``SPAKKY_OUTBOX__*`` setting has an invalid value."""

    message = "Invalid outbox configuration"


class OutboxStorageNotFoundError(AbstractSpakkyOutboxError):
    """Raised when no outbox storage is installed or registered."""

    message = (
        "No outbox storage is available. Install one, e.g. "
        '`pip install "spakky-outbox[postgres]"` (or [sqlalchemy], [mysql], '
        "[sqlite], [redis]), or register your own IAsyncOutboxStorage Pod"
    )


class OutboxStorageFlavourMissingError(AbstractSpakkyOutboxError):
    """Raised when the sync (or async) bus or relay needs a storage flavour nobody registered."""

    message = "The outbox storage registered here has no port of the flavour this needs"


class AmbiguousOutboxStorageError(AbstractSpakkyOutboxError):
    """Raised when several outbox storages are installed and none is selected."""

    message = "Several outbox storages are installed; choose one"


class UnknownOutboxStorageError(AbstractSpakkyOutboxError):
    """Raised when ``SPAKKY_OUTBOX__STORAGE`` names a storage that is not installed."""

    message = "SPAKKY_OUTBOX__STORAGE names a storage that is not installed"


class OutboxTransactionRequiredError(AbstractSpakkyOutboxError):
    """Raised when ``save`` is called outside the business transaction."""

    message = (
        "Outbox save needs an open transaction: publish integration events from "
        "a @Transactional() use case"
    )


class OutboxStorageUnavailableError(AbstractSpakkyOutboxError):
    """Raised when a storage cannot reach its database or server."""

    message = "Outbox storage is unavailable"


class OutboxDeliveryNotInstalledError(AbstractSpakkyOutboxError):
    """Raised when ``SPAKKY_OUTBOX__DELIVERY`` names an adapter whose client library is missing."""

    message = "The delivery adapter SPAKKY_OUTBOX__DELIVERY names is not installed"


class OutboxBrokerUnavailableError(AbstractSpakkyOutboxError, EventTransportNotRunningError):
    """Raised by the outbox's delivery adapters when the broker cannot be reached or confirm.

    It is an `EventTransportNotRunningError`, so the relay treats it as an outage:
    the batch is released untouched and nobody's retry budget is spent.
    """

    message = "Broker unavailable"


class OutboxDeliveryRefusedError(EventDeliveryRejectedError):
    """Raised by a delivery adapter's ``flush`` when the broker refused some records of the batch.

    ``refused`` maps the position of each refused record, counted over the
    ``send`` calls since the previous flush, to the broker's reason; every
    other record of the batch was confirmed.
    """

    message = "Broker refused part of the batch"

    refused: dict[int, str]

    def __init__(self, refused: dict[int, str]) -> None:
        """Keep which records were refused and why."""
        self.refused = refused
        super().__init__([f"record {position}: {reason}" for position, reason in sorted(refused.items())])
        self.args = (f"{self.message}: {'; '.join(self.reasons)}",)
