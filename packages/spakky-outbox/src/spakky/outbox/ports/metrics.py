"""Metrics port: what the relay reports, for any metrics backend to record."""

from abc import ABC, abstractmethod
from collections.abc import Callable

from spakky.outbox.common.stats import OutboxStats

type BacklogRead = Callable[[], OutboxStats | None]
"""Reads the backlog now (a bounded `stats` read); None when it cannot from the calling thread."""


class IOutboxMetrics(ABC):
    """Receives the relay's counts and timings, and a way to read the outbox backlog on demand.

    The counts and the backlog are abstract, as in 8.5; the timings have
    defaults that drop them, so a metrics class written for 8.5 still works.
    """

    @abstractmethod
    def record_relayed(self, count: int) -> None:
        """Messages confirmed by the transport and acknowledged."""

    @abstractmethod
    def record_failed(self, count: int) -> None:
        """Messages the transport refused (each spends a retry)."""

    @abstractmethod
    def record_abandoned(self, count: int) -> None:
        """Messages given up on after their last retry."""

    def record_fenced(self, count: int) -> None:  # noqa: B027 - optional: metrics written before it record nothing
        """Delivered messages whose acknowledgement was fenced off: their claims were taken over.

        A relay that keeps reporting these loses its claims (paused past its
        lease, a storage clock step, a lease too short for its batches); the
        messages are delivered again by their new owner.
        """

    @abstractmethod
    def record_backlog(self, pending: int, oldest_pending_age_seconds: float | None) -> None:
        """Current pending count and age of the oldest pending message."""

    def watch_backlog(self, read: BacklogRead) -> None:  # noqa: B027 - optional hook: backends without gauges ignore it
        """Take the relay's backlog reader; call it when the backend observes its gauges.

        The relay no longer reads the backlog on a timer: a backend with
        observable gauges calls ``read`` from its callback (so the storage is
        read only when someone reads the figures) and passes the result to
        `record_backlog`. The default ignores it.
        """

    def record_batch_size(self, count: int) -> None:  # noqa: B027 - optional hook, no-op by default
        """Messages one claim returned (a claim that found nothing is not reported)."""

    def record_commit_to_send(self, seconds: float) -> None:  # noqa: B027 - optional hook
        """How long a message waited in the outbox: from its ``created_at`` to the send that went through."""

    def record_send_duration(self, seconds: float) -> None:  # noqa: B027 - optional hook
        """How long one ``transport.send`` took (whatever its outcome)."""

    def record_flush_duration(self, seconds: float) -> None:  # noqa: B027 - optional hook
        """How long one ``transport.flush`` took (whatever its outcome)."""
