# Sync twin generated from packages/spakky-outbox/src/spakky/outbox/testing/async_memory.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): 3b3db4ebad3704a375c10a4dcd706d149a8f4a3d6482ef6efcfe1c4a60a8ddd3
"""The in-memory reference storage and transaction of the sync flavour."""

from collections.abc import Sequence
from contextvars import ContextVar, Token
from datetime import datetime, timedelta
from typing import override
from uuid import UUID

from spakky.core.pod.annotations.pod import Pod
from spakky.data.persistency.transaction import AbstractTransaction
from spakky.outbox.common.figures import RELAY_FIGURES_READ_LIMIT, RelayFigures
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import KeyHead, MessageDetail, OutboxStats, RelayClaims
from spakky.outbox.ports.storage import (
    IOutboxFullStorage,
)
from spakky.outbox.testing.memory_state import (
    InMemoryOutboxState,
    InMemoryOutboxView,
    Pending,
)


@Pod()
class InMemoryOutboxStorage(
    InMemoryOutboxView,
    IOutboxFullStorage,
):
    """Synchronous in-memory storage with every capability."""

    @override
    def save(self, message: OutboxMessage) -> None:
        self._state.save(message)

    @override
    def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        self._seen_version = self._state.version
        return self._state.claim(self._owner, limit, max_retry)

    @override
    def mark_published(self, message_id: UUID) -> None:
        self._state.publish(self._owner, [message_id])

    @override
    def mark_published_many(self, message_ids: Sequence[UUID]) -> int:
        return self._state.publish(self._owner, message_ids)

    @override
    def increment_retry(self, message_id: UUID) -> None:
        self._state.increment_retry(self._owner, message_id)

    @override
    def mark_abandoned(self, message_id: UUID) -> None:
        self._state.abandon(self._owner, message_id, None)

    @override
    def schedule_retry(self, message_id: UUID, delay_seconds: float, error: str) -> None:
        self._state.schedule_retry(self._owner, message_id, delay_seconds, error)

    @override
    def abandon(self, message_id: UUID, error: str) -> None:
        self._state.abandon(self._owner, message_id, error)

    @override
    def release(self, message_ids: Sequence[UUID]) -> None:
        self._state.release(self._owner, message_ids)

    @override
    def wait_for_messages(self, timeout: float) -> bool:
        # Commits since this instance's last claim count, so none is lost
        # between a claim that found nothing and the wait that follows it.
        return self._state.wait(self._seen_version, timeout)

    @override
    def stats(self, timeout_seconds: float | None = None) -> OutboxStats:
        return self._state.stats()

    @override
    def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        return self._state.list_abandoned(limit)

    @override
    def requeue_abandoned(
        self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000
    ) -> int:
        return self._state.requeue_abandoned(message_ids, limit)

    @override
    def renew_claims(self, message_ids: Sequence[UUID]) -> int:
        return self._state.renew(self._owner, message_ids)

    @override
    def key_heads(self, limit: int = 50, after: UUID | None = None) -> list[KeyHead]:
        return self._state.key_heads(limit, after)

    @override
    def get_message(self, message_id: UUID) -> MessageDetail | None:
        return self._state.get_message(message_id)

    @override
    def relay_claims(self) -> list[RelayClaims]:
        return self._state.relay_claims()

    @override
    def write_relay_figures(self, figures: RelayFigures) -> None:
        self._state.write_relay_figures(figures)

    @override
    def relay_figures(self, since: datetime, limit: int = RELAY_FIGURES_READ_LIMIT) -> list[RelayFigures]:
        return self._state.relay_figures(since, limit)

    @override
    def purge_published(self, before: datetime | timedelta, limit: int = 10_000) -> int:
        return self._state.purge_published(before, limit)


@Pod()
class InMemoryTransaction(AbstractTransaction):
    """Synchronous transaction over `InMemoryOutboxState`."""

    def __init__(self, state: InMemoryOutboxState) -> None:
        """Bind to the shared state."""
        super().__init__(autocommit=True)
        self._state = state
        self._token: ContextVar[Token[Pending | None] | None] = ContextVar(
            f"spakky_outbox_memory_tx_{type(self).__name__}_{id(self)}", default=None
        )

    @override
    def initialize(self) -> None:
        self._token.set(self._state.begin())

    @override
    def dispose(self) -> None:
        token = self._token.get()
        if token is not None:
            self._state.end(token)

    @override
    def commit(self) -> None:
        self._state.commit()

    @override
    def rollback(self) -> None:
        self._state.rollback()
