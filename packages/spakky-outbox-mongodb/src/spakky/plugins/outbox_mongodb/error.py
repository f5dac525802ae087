"""Errors raised by the MongoDB outbox storage."""

from spakky.outbox.error import (
    AbstractOutboxDetailedError,
    InvalidOutboxConfigError,
    OutboxStorageUnavailableError,
)


class InvalidMongoOutboxConfigError(InvalidOutboxConfigError):
    """Raised when a ``SPAKKY_OUTBOX_MONGODB__*`` setting has an invalid value."""

    message = "Invalid MongoDB outbox configuration"


class MongoTransactionNotActiveError(AbstractOutboxDetailedError):
    """Raised when the current session is requested outside a transaction."""

    message = (
        "No MongoDB transaction is open in this context: call this from a "
        "@Transactional() use case"
    )


class MongoTransactionRetryableError(AbstractOutboxDetailedError):
    """Raised when MongoDB aborted a transaction for a transient reason.

    Nothing of the use case was written (``TransientTransactionError``), or
    the commit's outcome could not be confirmed even after retrying it
    (``UnknownTransactionCommitResult``). The message says which.
    """

    message = "MongoDB transaction failed for a transient reason"


class MongoReplicaSetRequiredError(AbstractOutboxDetailedError):
    """Raised at startup when the server cannot run multi-document transactions."""

    message = (
        "The MongoDB outbox needs multi-document transactions, which need a "
        "replica set or a sharded cluster; this server is standalone. Start "
        "mongod with `--replSet rs0`, run `rs.initiate()` once in mongosh, and "
        "add `?replicaSet=rs0` to SPAKKY_OUTBOX_MONGODB__URL (a single-node "
        "replica set is enough)"
    )


class MongoOutboxCollectionMissingError(OutboxStorageUnavailableError):
    """Raised by administration when the outbox collection does not exist."""

    message = "The MongoDB outbox collection does not exist"
