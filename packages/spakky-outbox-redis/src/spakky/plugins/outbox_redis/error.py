"""Errors raised by the Redis outbox storage."""

from spakky.outbox.error import AbstractOutboxDetailedError, InvalidOutboxConfigError


class InvalidRedisOutboxConfigError(InvalidOutboxConfigError):
    """Raised when a ``SPAKKY_OUTBOX_REDIS__*`` setting has an invalid value."""

    message = "Invalid Redis outbox configuration"


class RedisTransactionNotActiveError(AbstractOutboxDetailedError):
    """Raised when the current Redis pipeline is requested outside a transaction."""

    message = (
        "No Redis transaction is open in this context: call this from a "
        "@Transactional() use case"
    )


class CrossSlotWriteError(AbstractOutboxDetailedError):
    """Raised when a transaction on a Redis Cluster writes a key outside the outbox's slot."""

    message = (
        "On a Redis Cluster a @Transactional() use case may only write keys in the "
        "outbox's slot: give business keys the outbox's hash tag, e.g. "
        "RedisKeys(prefix).business(name). Nothing was written"
    )


class UncheckedClusterCommandError(AbstractOutboxDetailedError):
    """Raised when an asyncio cluster transaction queues a command whose keys only the server knows."""

    message = (
        "An asyncio Redis Cluster transaction cannot queue a command whose keys "
        "only the server can list (e.g. SORT ... STORE, ZUNIONSTORE): its slot "
        "cannot be checked, nor routed by redis-py. Use commands with fixed key "
        "positions, or the synchronous transaction"
    )


class InboxRecordNotFirstError(AbstractOutboxDetailedError):
    """Raised when the Redis inbox records a message after the transaction queued other commands.

    The record WATCHes its key before the transaction's MULTI, so it must be
    the first thing the transaction does (as ``@Idempotent`` inside
    ``@Transactional()`` does), and there is one per transaction.
    """

    message = (
        "The Redis inbox must record the message first in its transaction (one "
        "record per transaction): put @Idempotent on the handler that opens the "
        "@Transactional(), not on one called after other writes"
    )
