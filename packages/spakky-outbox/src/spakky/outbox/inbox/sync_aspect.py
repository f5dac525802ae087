# Sync twin generated from packages/spakky-outbox/src/spakky/outbox/inbox/async_aspect.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): fc7e543576d6a1109c2221bc0082107d1f097a24d5908a21726b66e8d5bc8cc7
"""The sync aspect behind `Idempotent`: run a handler once per (consumer, message)."""

import logging
from typing import Any, override

from spakky.core.aop.advisor import Advisor
from spakky.core.aop.aspect import Aspect
from spakky.core.aop.interfaces.aspect import IAspect
from spakky.core.aop.pointcut import Around
from spakky.core.common.types import Func
from spakky.core.pod.annotations.order import Order
from spakky.core.pod.interfaces.aware.container_aware import IContainerAware
from spakky.core.pod.interfaces.container import IContainer
from spakky.outbox.inbox.annotation import Idempotent, InboxMode, handles
from spakky.outbox.inbox.config import InboxConfig
from spakky.outbox.inbox.error import InboxMessageBusyError, InboxStorageNotFoundError
from spakky.outbox.inbox.identity import find_event, message_identity
from spakky.outbox.ports.inbox import IInboxStorage, LeaseOutcome

logger = logging.getLogger(__name__)

INBOX_ASPECT_ORDER = 2
"""Inside ``@Transactional()`` (order 1): the record joins the handler's transaction."""


def _handler(joinpoint: Func) -> Func:
    """The handler method itself under the advisors of aspects inside this one."""
    target: Any = joinpoint
    while isinstance(target, Advisor):
        target = target.next
    return target


def _skipped(consumer: str, message_id: str) -> None:
    # A duplicate is the inbox doing its job, yet worth a line: the count of
    # redeliveries a consumer sees is how an operator sizes the window.
    logger.info("Inbox skipped message %s for consumer %s: handled before", message_id, consumer)


@Order(INBOX_ASPECT_ORDER)
@Aspect()
class IdempotentAspect(IAspect, IContainerAware):
    """Skips an ``@Idempotent`` sync handler for a message its consumer handled already."""

    _container: IContainer | None = None
    _inbox: IInboxStorage | None = None

    def __init__(self, config: InboxConfig) -> None:
        """Keep the inbox settings; the storage is looked up at the first call."""
        self._config = config

    @override
    def set_container(self, container: IContainer) -> None:
        self._container = container

    def _storage(self) -> IInboxStorage:
        if self._inbox is None:
            inbox = None if self._container is None else self._container.get_or_none(IInboxStorage)
            if inbox is None:
                raise InboxStorageNotFoundError()
            self._inbox = inbox
        return self._inbox

    @Around(handles)
    @override
    def around(self, joinpoint: Func, *args: Any, **kwargs: Any) -> Any:
        handler = _handler(joinpoint)
        annotation = Idempotent.get(handler)
        consumer = annotation.consumer_of(handler)
        message_id = message_identity(find_event(args, kwargs))
        inbox = self._storage()
        if annotation.mode is InboxMode.TRANSACTIONAL:
            if not inbox.record(consumer, message_id):
                _skipped(consumer, message_id)
                return None
            return joinpoint(*args, **kwargs)
        lease_seconds = annotation.lease_seconds or self._config.lease_seconds
        lease = inbox.acquire_lease(consumer, message_id, lease_seconds)
        if lease.outcome is LeaseOutcome.DONE:
            _skipped(consumer, message_id)
            return None
        if lease.outcome is LeaseOutcome.BUSY or lease.token is None:
            raise InboxMessageBusyError(f"consumer {consumer!r}, message {message_id!r}")
        try:
            result = joinpoint(*args, **kwargs)
        except Exception:
            # A failure, not a crash: the redelivery need not wait for the lease.
            inbox.release_lease(consumer, message_id, lease.token)
            raise
        inbox.finish_lease(consumer, message_id, lease.token)
        return result
