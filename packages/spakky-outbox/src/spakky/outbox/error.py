"""Outbox error classes."""

from abc import ABC

from spakky.core.common.error import AbstractSpakkyFrameworkError
from spakky.event.error import EventDeliveryRejectedError, EventTransportNotRunningError


class AbstractSpakkyOutboxError(AbstractSpakkyFrameworkError, ABC):
    """Base exception for Spakky Outbox errors.

    Built like any exception, as in 8.5: an application's own subclass keeps
    the ``args`` and ``str()`` it is raised with, whether or not it defines a
    ``message``. The errors of this project derive from
    `AbstractOutboxDetailedError`.
    """


class AbstractOutboxDetailedError(AbstractSpakkyOutboxError, ABC):
    """Base of this project's errors: the class ``message``, then an optional detail."""

    detail: str | None
    """What this occurrence adds to the class message (None: nothing)."""

    def __init__(self, detail: str | None = None) -> None:
        """Build the error, appending an optional detail to the class message."""
        self.detail = detail
        super().__init__(self.message if detail is None else f"{self.message}: {detail}")


class OutboxSerializationError(AbstractOutboxDetailedError, ValueError):
    """Raised when an integration event cannot be serialised into an outbox message.

    A `ValueError`, as pydantic's serialisation error was in 8.5, so an
    ``except ValueError`` around ``publish()`` still catches it.
    """

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


class InvalidOutboxMessageError(AbstractOutboxDetailedError):
    """Raised when a message cannot be stored because a field has the wrong type."""

    message = "Outbox message cannot be stored"


class InvalidOutboxConfigError(AbstractOutboxDetailedError, ValueError):
    """Raised when an ``SPAKKY_OUTBOX__*`` setting has an invalid value.

    A `ValueError`, as pydantic's validation error was in 8.5.
    """

    message = "Invalid outbox configuration"


class OutboxStorageNotFoundError(AbstractOutboxDetailedError):
    """Raised when no outbox storage is installed or registered."""

    message = (
        "No outbox storage is available. Install one, e.g. "
        '`pip install "spakky-outbox[postgres]"` (or [sqlalchemy], [mysql], '
        "[sqlite], [redis]), or register your own IAsyncOutboxStorage Pod"
    )


class OutboxStorageFlavourMissingError(AbstractOutboxDetailedError):
    """Raised when the sync (or async) bus or relay needs a storage flavour nobody registered."""

    message = "The outbox storage registered here has no port of the flavour this needs"


class AmbiguousOutboxStorageError(AbstractOutboxDetailedError):
    """Raised when several outbox storages are installed and none is selected."""

    message = "Several outbox storages are installed; choose one"


class UnknownOutboxStorageError(AbstractOutboxDetailedError):
    """Raised when ``SPAKKY_OUTBOX__STORAGE`` names a storage that is not installed."""

    message = "SPAKKY_OUTBOX__STORAGE names a storage that is not installed"


class OutboxTransactionRequiredError(AbstractOutboxDetailedError):
    """Raised when ``save`` is called outside the business transaction."""

    message = (
        "Outbox save needs an open transaction: publish integration events from "
        "a @Transactional() use case"
    )


class OutboxStorageUnavailableError(AbstractOutboxDetailedError):
    """Raised when a storage cannot reach its database or server."""

    message = "Outbox storage is unavailable"


class OutboxDeliveryNotInstalledError(AbstractOutboxDetailedError):
    """Raised when ``SPAKKY_OUTBOX__DELIVERY`` names an adapter whose client library is missing."""

    message = "The delivery adapter SPAKKY_OUTBOX__DELIVERY names is not installed"


class OutboxBrokerUnavailableError(AbstractOutboxDetailedError, EventTransportNotRunningError):
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


class ApplicationNotStartedError(AbstractOutboxDetailedError):
    """Raised when a coroutine is handed to the application's loop before start or after stop."""

    message = (
        "The application is not started: call SpakkyApplication.start() before "
        "running its use cases through ApplicationEventLoop"
    )


class ApplicationLoopReentryError(AbstractOutboxDetailedError):
    """Raised when ApplicationEventLoop.run is called from the application's own loop."""

    message = (
        "ApplicationEventLoop.run was called on the application's event loop, where "
        "waiting for the result would block the loop for good: await the coroutine instead"
    )


class OutboxAdministrationUnsupportedError(AbstractOutboxDetailedError):
    """Raised when neither storage flavour of the application can be administered."""

    message = (
        "The outbox storage has no administration capability "
        "(IAsyncOutboxAdministration or IOutboxAdministration)"
    )


class OutboxKeyHeadsUnsupportedError(AbstractOutboxDetailedError):
    """Raised when a storage written before `key_heads` is asked for its keys' heads."""

    message = "The outbox storage cannot list the heads of its partition keys (key_heads)"


class OutboxMessageLookupUnsupportedError(AbstractOutboxDetailedError):
    """Raised when a storage written before `get_message` is asked for one message."""

    message = "The outbox storage cannot look up one message by id (get_message)"


class OutboxRelayClaimsUnsupportedError(AbstractOutboxDetailedError):
    """Raised when a storage that cannot tell which relay holds what is asked for its relays' claims."""

    message = "The outbox storage cannot tell which relay instances hold claims (relay_claims)"
