"""Errors raised by the Redis outbox storage."""

from spakky.outbox.error import AbstractSpakkyOutboxError, InvalidOutboxConfigError


class InvalidRedisOutboxConfigError(InvalidOutboxConfigError):
    """Raised when a ``SPAKKY_OUTBOX_REDIS__*`` setting has an invalid value."""

    message = "Invalid Redis outbox configuration"


class RedisTransactionNotActiveError(AbstractSpakkyOutboxError):
    """Raised when the current Redis pipeline is requested outside a transaction."""

    message = (
        "No Redis transaction is open in this context: call this from a "
        "@Transactional() use case"
    )


class InvalidOutboxMessageError(AbstractSpakkyOutboxError):
    """Raised when a message cannot be stored because a field has the wrong type."""

    message = "Outbox message cannot be stored in Redis"
