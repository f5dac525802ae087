"""An application that brings its own storage, with only ``spakky-outbox`` installed.

This is how the 6.x/8.5 docs add a storage: no storage package, the app scans
its own `IAsyncOutboxStorage` Pod (`ListOutboxStorage`, the four methods) and
the transaction Pods ``save`` joins. Only the asynchronous flavour exists, so
the asynchronous bus and relay use it; the synchronous bus is built without a
storage and would refuse ``send`` with `OutboxStorageFlavourMissingError`.

Run ``python -m examples.custom_backend.app``: it takes three notes in
``@Transactional()`` use cases (one rolls back), waits for the relay to deliver
the committed ones to a recording transport, and prints as JSON the business
records and messages stored and the events delivered (name, note id).
"""

import json
import sys
import time
from collections.abc import Coroutine
from contextlib import suppress
from typing import Any, cast

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.core.common.mutability import immutable
from spakky.core.stereotype.usecase import UseCase
from spakky.data.aspects.transactional import Transactional
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.event.event_publisher import IAsyncEventPublisher
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.testing.transport import AsyncRecordingEventTransport

from examples.custom_backend import storage
from examples.custom_backend.storage import Database


@immutable
class NoteTaken(AbstractIntegrationEvent):
    """Leaves the service through the outbox."""

    note_id: str


class NoteDiscardedError(Exception):
    """The use case gave up; its transaction rolls back."""


@UseCase()
class TakeNoteUseCase:
    """Writes a note and its event in one transaction."""

    def __init__(self, publisher: IAsyncEventPublisher, database: Database) -> None:
        """Inject the event publisher and the database."""
        self._publisher = publisher
        self._database = database

    @Transactional()
    async def execute(self, note_id: str, *, keep: bool = True) -> None:
        """Write the note and publish `NoteTaken`; ``keep=False`` rolls both back."""
        self._database.write(note_id, True)
        await self._publisher.publish(NoteTaken(note_id=note_id))
        if not keep:
            raise NoteDiscardedError(note_id)


def build(include: set[Plugin] | None = None) -> SpakkyApplication:
    """Load the installed plugins and add the app's own storage, transactions and use case."""
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=include)
    app.scan(storage)
    app.add(TakeNoteUseCase)
    app.add(AsyncRecordingEventTransport)  # stands in for Kafka or RabbitMQ
    return app


def run(include: set[Plugin] | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """Start the app, take three notes (one discarded), report what was stored and delivered."""
    app = build(include).start()
    context = cast(ApplicationContext, app.application_context)
    loop = context.get(ApplicationEventLoop)

    def call(coroutine: Coroutine[Any, Any, None]) -> None:
        loop.run(coroutine, timeout)

    try:
        use_case = context.get(TakeNoteUseCase)
        for note_id, keep in (("n-1", True), ("n-2", False), ("n-3", True)):
            context.clear_context()
            with suppress(NoteDiscardedError):
                call(use_case.execute(note_id, keep=keep))
        transport = context.get(AsyncRecordingEventTransport)
        deadline = time.monotonic() + timeout
        while len(transport.delivered) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        database = context.get(Database)
        return {
            "business": sorted(database.business),
            "stored": len(database.rows),
            "delivered": [
                [record.event_name, json.loads(record.payload)["note_id"]]
                for record in transport.delivered
            ],
        }
    finally:
        app.stop()


if __name__ == "__main__":
    json.dump(run(), sys.stdout)
