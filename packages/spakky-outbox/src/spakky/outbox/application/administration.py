"""The administration capability of an application's outbox, whichever flavour its storage is.

Operator tools (the ``spakky-outbox`` command) await one
`IAsyncOutboxAdministration`; an application whose storage is sync only gets
its sync capability run in worker threads, so the same tools work on it.
"""

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import override
from uuid import UUID

from spakky.core.pod.interfaces.application_context import IApplicationContext
from spakky.outbox.common.figures import RELAY_FIGURES_READ_LIMIT, RelayFigures
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import (
    KeyHead,
    MessageDetail,
    OutboxStats,
    OutboxTarget,
    RelayClaims,
)
from spakky.outbox.error import OutboxAdministrationUnsupportedError
from spakky.outbox.ports.storage import (
    IAsyncOutboxAdministration,
    IAsyncOutboxRelayFigures,
    IAsyncOutboxStorage,
    IOutboxAdministration,
    IOutboxRelayFigures,
    IOutboxStorage,
)


class ThreadedOutboxAdministration(IAsyncOutboxAdministration):
    """A sync storage's administration capability, awaitable: each call runs in a worker thread."""

    def __init__(self, storage: IOutboxAdministration) -> None:
        """Administer ``storage``."""
        self._storage = storage

    @override
    def target(self) -> OutboxTarget:
        return self._storage.target()

    @override
    async def stats(self, timeout_seconds: float | None = None) -> OutboxStats:
        return await asyncio.to_thread(self._storage.stats, timeout_seconds)

    @override
    async def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        return await asyncio.to_thread(self._storage.list_abandoned, limit)

    @override
    async def requeue_abandoned(
        self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000
    ) -> int:
        return await asyncio.to_thread(
            self._storage.requeue_abandoned, message_ids, limit
        )

    @override
    async def key_heads(self, limit: int = 50, after: UUID | None = None) -> list[KeyHead]:
        return await asyncio.to_thread(self._storage.key_heads, limit, after)

    @override
    async def get_message(self, message_id: UUID) -> MessageDetail | None:
        return await asyncio.to_thread(self._storage.get_message, message_id)

    @override
    async def relay_claims(self) -> list[RelayClaims]:
        return await asyncio.to_thread(self._storage.relay_claims)

    @override
    async def purge_published(self, before: datetime | timedelta, limit: int = 10_000) -> int:
        return await asyncio.to_thread(self._storage.purge_published, before, limit)


class ThreadedOutboxFiguresAdministration(ThreadedOutboxAdministration, IAsyncOutboxRelayFigures):
    """`ThreadedOutboxAdministration` of a sync storage that keeps the relays' figures too."""

    def __init__(self, storage: IOutboxAdministration, figures: IOutboxRelayFigures) -> None:
        """Administer ``storage``, whose figures capability is ``figures`` (the same object)."""
        super().__init__(storage)
        self._figures = figures

    @override
    async def write_relay_figures(self, figures: RelayFigures) -> None:
        await asyncio.to_thread(self._figures.write_relay_figures, figures)

    @override
    async def relay_figures(self, since: datetime, limit: int = RELAY_FIGURES_READ_LIMIT) -> list[RelayFigures]:
        return await asyncio.to_thread(self._figures.relay_figures, since, limit)


def outbox_administration(context: IApplicationContext) -> IAsyncOutboxAdministration:
    """The administration capability of the application's storage: the async one, else the sync one in threads.

    Raises:
        OutboxAdministrationUnsupportedError: Neither storage has the capability.
    """
    storage = context.get_or_none(IAsyncOutboxStorage)  # type: ignore[type-abstract]
    if isinstance(storage, IAsyncOutboxAdministration):
        return storage
    sync_storage = context.get_or_none(IOutboxStorage)  # type: ignore[type-abstract]
    if isinstance(sync_storage, IOutboxAdministration):
        if isinstance(sync_storage, IOutboxRelayFigures):
            return ThreadedOutboxFiguresAdministration(sync_storage, sync_storage)
        return ThreadedOutboxAdministration(sync_storage)
    found = [type(s).__name__ for s in (storage, sync_storage) if s is not None]
    raise OutboxAdministrationUnsupportedError(", ".join(found) or "no outbox storage")
