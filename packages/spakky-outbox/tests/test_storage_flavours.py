"""Applications whose storage has one flavour only (issue 10.5).

The bus of the missing flavour is built without a storage, so the
application starts and relays; publishing through that bus fails with our
error, and the transaction it ran in rolls back.
"""

import os
from collections.abc import Coroutine, Iterator
from typing import Any, cast

import pytest
from memory_app import memory_app
from spakky.core.application.application import SpakkyApplication
from spakky.core.common.mutability import immutable
from spakky.core.stereotype.usecase import UseCase
from spakky.data.aspects.transactional import Transactional
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.event.event_publisher import IAsyncEventPublisher, IEventPublisher
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.error import OutboxStorageFlavourMissingError
from spakky.outbox.testing.memory import (
    AsyncInMemoryOutboxStorage,
    InMemoryOutboxState,
    InMemoryOutboxStorage,
)
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    RecordingEventTransport,
)
from spakky.outbox.testing.waiting import wait_for
from spakky_outbox_testservices.environ import scoped_environ


@immutable
class NoteTaken(AbstractIntegrationEvent):
    """The event both use cases publish."""

    note_id: str


@UseCase()
class NoteUseCase:
    """Writes a note and publishes it, from synchronous or asynchronous code."""

    def __init__(self, publisher: IEventPublisher, async_publisher: IAsyncEventPublisher, state: InMemoryOutboxState) -> None:
        self._publishers = publisher, async_publisher
        self._state = state

    @Transactional()
    def execute_sync(self, note_id: str) -> None:
        self._state.put_business(note_id, True)
        self._publishers[0].publish(NoteTaken(note_id=note_id))

    @Transactional()
    async def execute(self, note_id: str) -> None:
        self._state.put_business(note_id, True)
        await self._publishers[1].publish(NoteTaken(note_id=note_id))


@pytest.fixture
def relay_env() -> Iterator[dict[str, str]]:
    """Restore the environment a test changes; relays poll quickly."""
    with scoped_environ({"SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS": "0.05"}):
        yield cast(dict[str, str], os.environ)


def start(storage: type[InMemoryOutboxStorage] | type[AsyncInMemoryOutboxStorage]) -> SpakkyApplication:
    """Start the core alone with the app's own in-memory storage of one flavour."""
    return memory_app(storage, NoteUseCase).start()


def run(app: SpakkyApplication, coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine on the application's event loop thread."""
    app.application_context.get(ApplicationEventLoop).run(coroutine, timeout=10)


def test_flavours_async_only_storage_expect_async_relayed_and_sync_publish_refused(
    relay_env: dict[str, str],
) -> None:
    """Async-only storage: the app starts, relays async publishes; a sync publish fails with our error and rolls back."""
    app = start(AsyncInMemoryOutboxStorage)
    try:
        context = app.application_context
        state = context.get(InMemoryOutboxState)
        run(app, context.get(NoteUseCase).execute("n-async"))
        delivered = wait_for(lambda: context.get(AsyncRecordingEventTransport).delivered, timeout=10)
        assert [d.event_name for d in delivered] == ["NoteTaken"]
        with pytest.raises(OutboxStorageFlavourMissingError) as caught:
            context.get(NoteUseCase).execute_sync("n-sync")
        assert "NoteTaken" in str(caught.value) and "IAsyncEventPublisher" in str(caught.value)
        assert state.business == {"n-async": True}
        assert len(state.records) == 1
    finally:
        app.stop()


def test_flavours_sync_only_storage_expect_sync_relayed_and_async_publish_refused(
    relay_env: dict[str, str],
) -> None:
    """Sync-only storage with the thread relay: sync publishes are relayed; an async publish fails with our error and rolls back."""
    relay_env["SPAKKY_OUTBOX__RELAY"] = "sync"
    app = start(InMemoryOutboxStorage)
    try:
        context = app.application_context
        state = context.get(InMemoryOutboxState)
        context.get(NoteUseCase).execute_sync("n-sync")
        delivered = wait_for(lambda: context.get(RecordingEventTransport).delivered, timeout=10)
        assert [d.event_name for d in delivered] == ["NoteTaken"]
        with pytest.raises(OutboxStorageFlavourMissingError) as caught:
            run(app, context.get(NoteUseCase).execute("n-async"))
        assert "NoteTaken" in str(caught.value) and "IEventPublisher" in str(caught.value)
        assert state.business == {"n-sync": True}
        assert len(state.records) == 1
    finally:
        app.stop()
