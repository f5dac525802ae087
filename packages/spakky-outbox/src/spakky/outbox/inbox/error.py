"""Errors of the inbox."""

from spakky.outbox.error import AbstractOutboxDetailedError


class InboxConflictError(AbstractOutboxDetailedError):
    """Raised at commit when another transaction recorded the same message first.

    The whole transaction rolled back (business writes too); the broker's
    redelivery then finds the message handled and skips it.
    """

    message = "Another consumer instance handled this message concurrently; the transaction rolled back"


class InboxMessageBusyError(AbstractOutboxDetailedError):
    """Raised in lease mode when another consumer instance holds a live lease on the message.

    Let the broker redeliver it later: when that instance finishes, the
    redelivery is skipped; when it crashed, its lease lapses and the
    redelivery runs the handler.
    """

    message = "Another consumer instance is handling this message (live lease)"


class InboxStorageNotFoundError(AbstractOutboxDetailedError):
    """Raised when an ``@Idempotent`` handler runs and no inbox storage is registered."""

    message = (
        "No inbox storage is registered: install a storage package of spakky-outbox "
        "(spakky-outbox[sqlalchemy], [mongodb] or [redis]) and select it with "
        "SPAKKY_OUTBOX__STORAGE"
    )


class InboxIdentityNotFoundError(AbstractOutboxDetailedError):
    """Raised when an ``@Idempotent`` handler is called without an event argument."""

    message = "An @Idempotent handler needs an event (an AbstractEvent argument) to identify the message"


class InvalidInboxKeyError(AbstractOutboxDetailedError, ValueError):
    """Raised when a consumer name or message identity cannot be stored."""

    message = "Inbox consumer name and message identity must be non-empty and at most 255 characters"


class InboxNotFoundError(AbstractOutboxDetailedError):
    """Raised by an inbox's ``stats`` or ``purge`` when the store holds no inbox yet.

    The first record creates it; until then there is nothing to count or sweep.
    """

    message = "The inbox does not exist"
