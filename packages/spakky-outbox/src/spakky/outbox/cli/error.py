"""The error a ``spakky-outbox`` command ends with: one line, exit status 2."""

from spakky.outbox.error import AbstractOutboxDetailedError


class OutboxCommandError(AbstractOutboxDetailedError):
    """Raised for a command-line usage the outbox cannot carry out."""

    message = "spakky-outbox"
