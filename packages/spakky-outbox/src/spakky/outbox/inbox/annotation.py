"""`Idempotent`: the annotation that makes an event handler run once per message."""

from dataclasses import dataclass
from enum import StrEnum
from inspect import iscoroutinefunction

from spakky.core.common.annotation import FunctionAnnotation
from spakky.core.common.types import Func


class InboxMode(StrEnum):
    """How an idempotent handler records the messages it handled."""

    TRANSACTIONAL = "transactional"
    """The record is written in the handler's ``@Transactional()`` with its business writes."""
    LEASE = "lease"
    """Record first with a lease, run, mark done: for effects outside the database."""


@dataclass
class Idempotent(FunctionAnnotation):
    """Run the annotated ``@on_event`` method only for messages its consumer has not handled.

    Transactional mode (the default) needs ``@Transactional()`` on the same
    method: the inbox record joins its transaction. Lease mode needs none.
    """

    consumer: str | None = None
    """Consumer name the records are kept under; default: the handler's qualified name."""
    mode: InboxMode = InboxMode.TRANSACTIONAL
    lease_seconds: float | None = None
    """Lease mode: the lease; default ``SPAKKY_OUTBOX__INBOX__LEASE_SECONDS``."""

    def consumer_of(self, method: Func) -> str:
        """The consumer name for ``method``: the one given, else module and qualified name."""
        if self.consumer is not None:
            return self.consumer
        return f"{method.__module__}.{method.__qualname__}"


def handles_async(method: Func) -> bool:
    """Pointcut of the async aspect: an ``@Idempotent`` coroutine method."""
    return Idempotent.exists(method) and iscoroutinefunction(method)


def handles(method: Func) -> bool:
    """Pointcut of the sync aspect: an ``@Idempotent`` plain method."""
    return Idempotent.exists(method) and not iscoroutinefunction(method)
