"""Errors the console answers with instead of carrying out a request."""

from spakky.outbox.error import AbstractOutboxDetailedError


class ConsoleRequestError(AbstractOutboxDetailedError):
    """Raised for a request with a missing or invalid parameter (HTTP 400)."""

    message = "Invalid console request"


class ConsoleActionRefusedError(AbstractOutboxDetailedError):
    """Raised for an action the console refuses: read-only, not signed in, bad CSRF or confirmation (HTTP 403)."""

    message = "Action refused"


class ConsoleNotFoundError(AbstractOutboxDetailedError):
    """Raised for a message or page that does not exist (HTTP 404)."""

    message = "Not found"


class ConsoleStorageUnsupportedError(AbstractOutboxDetailedError):
    """Raised when the outbox storage cannot be administered (no `IAsyncOutboxAdministration`)."""

    message = "The console needs a storage with the administration capability (IAsyncOutboxAdministration)"
