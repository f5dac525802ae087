"""What both flavours of the MongoDB transaction share: the scope, the error rules, the signal."""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import ConnectionFailure, PyMongoError
from spakky.outbox.backend.transaction import TransactionScope
from spakky.outbox.backend.wakeup import WakeUpHub
from spakky.outbox.error import OutboxStorageUnavailableError
from spakky.outbox.inbox.error import InboxConflictError
from spakky.plugins.outbox_mongodb.error import MongoTransactionRetryableError

logger = logging.getLogger("spakky.plugins.outbox_mongodb.transaction")
"""The transactions' logger (named after the module users import them from)."""

COMMIT_ATTEMPTS = 3
"""Commits tried while MongoDB answers ``UnknownTransactionCommitResult`` (a commit is idempotent)."""


@dataclass
class Scope[S](TransactionScope[S]):
    """One open transaction in a context: its session, bind context and wake-up hubs."""

    bound: Any = None
    """The entered ``session.bind()`` context, when the driver has one."""
    hubs: set[WakeUpHub] = field(default_factory=set[WakeUpHub])
    """Outboxes this transaction saved into, signalled after the commit."""
    inbox_checks: list[Callable[[], Any]] = field(default_factory=list[Callable[[], Any]])
    """One per inbox record written here: whether another transaction committed it (awaitable in asyncio)."""

    @property
    def session(self) -> S:
        """The session the transaction runs in."""
        return self.resource


def translate_error(error: PyMongoError) -> Exception:
    """Our error for a transient or connection failure; ``error`` itself otherwise."""
    if error.has_error_label("TransientTransactionError"):
        return MongoTransactionRetryableError(
            f"TransientTransactionError ({error}): MongoDB aborted the transaction, "
            "nothing of the use case was written; run the use case again"
        )
    if error.has_error_label("UnknownTransactionCommitResult"):
        return MongoTransactionRetryableError(
            f"UnknownTransactionCommitResult ({error}) after {COMMIT_ATTEMPTS} commit "
            "attempts: the use case may or may not be stored; check its business "
            "documents before running it again"
        )
    if isinstance(error, ConnectionFailure):
        return OutboxStorageUnavailableError(str(error))
    return error


def commit_failed(error: PyMongoError, attempt: int) -> bool:
    """Whether to give up on the commit (``False``: retry it)."""
    return not error.has_error_label("UnknownTransactionCommitResult") or attempt >= COMMIT_ATTEMPTS


def inbox_conflict(error: PyMongoError) -> InboxConflictError:
    """`InboxConflictError` for a failed commit whose inbox record another transaction committed."""
    return InboxConflictError(f"the commit failed ({error}) and the inbox record is stored by another transaction")


def signal(scope: Scope[Any]) -> None:
    """Wake the relays of every outbox the committed transaction saved into."""
    for hub in scope.hubs:
        hub.signal()
