"""Metrics port: what the relay reports, for any metrics backend to record."""

from abc import ABC, abstractmethod


class IOutboxMetrics(ABC):
    """Receives the relay's counts and the outbox backlog."""

    @abstractmethod
    def record_relayed(self, count: int) -> None:
        """Messages confirmed by the transport and acknowledged."""

    @abstractmethod
    def record_failed(self, count: int) -> None:
        """Messages the transport refused (each spends a retry)."""

    @abstractmethod
    def record_abandoned(self, count: int) -> None:
        """Messages given up on after their last retry."""

    @abstractmethod
    def record_backlog(self, pending: int, oldest_pending_age_seconds: float | None) -> None:
        """Current pending count and age of the oldest pending message."""
