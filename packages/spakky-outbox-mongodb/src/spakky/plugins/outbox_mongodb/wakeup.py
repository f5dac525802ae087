"""Change-stream wake-up: a relay wakes when another process commits a message.

In process, a committing `AsyncMongoTransaction` / `MongoTransaction` signals
the outbox's `WakeUpHub` itself. For commits of other processes a watcher
keeps a change stream on inserts into the outbox collection open (with its
own client) and signals the hub per event; transactional inserts appear only
once committed. A server without change streams (standalone, or a wire-
compatible server that lacks them) refuses to open one: the watcher then
stops for good and relays poll, as they always do anyway. Events are hints.
"""

import asyncio
import contextlib
import logging
from typing import Any, override

from pymongo.errors import OperationFailure, PyMongoError
from spakky.outbox.backend.wakeup import (
    Backoff,
    ListenerTask,
    ListenerThread,
    WakeUpHub,
)
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.driver import maybe_await

logger = logging.getLogger(__name__)

PIPELINE: list[dict[str, Any]] = [
    {"$match": {"operationType": "insert"}},
    {"$project": {"_id": 1}},  # the resume token only: never ship payloads
]
"""Inserts into the outbox collection, without their documents."""

MAX_AWAIT_MS = 1000
"""How long one getMore of the stream waits on the server for an event."""


_REFUSALS = frozenset({40573, 115, 40324})
"""Codes of a server without change streams: standalone, command or stage unknown."""


def refuses_change_streams(error: PyMongoError) -> bool:
    """Whether ``error`` says the server has no change streams (not a passing failure)."""
    return isinstance(error, OperationFailure) and (
        error.code in _REFUSALS or "$changeStream" in str(error)
    )


def _refused(watcher: ListenerTask | ListenerThread, error: PyMongoError) -> bool:
    """Whether ``error`` is the server refusing change streams: ``watcher`` then stops for good."""
    if not refuses_change_streams(error):
        return False
    watcher.unsupported = True
    logger.info(
        "MongoDB change streams unavailable (%s); outbox relays wake in process and poll",
        error,
    )
    return True


class AsyncChangeStreamWatcher(ListenerTask):
    """Keeps one change stream open on the running event loop while a relay waits."""

    def __init__(self, connections: MongoOutboxConnectionManager, hub: WakeUpHub) -> None:
        """Watch the outbox collection of ``connections``; signal ``hub``."""
        super().__init__(hub)
        self._connections = connections

    @override
    async def _run(self) -> None:
        client = self._connections.new_async_client()
        backoff = Backoff()
        try:
            collection = self._connections.async_collection(client)
            while True:
                try:
                    stream = await maybe_await(collection.watch(PIPELINE, max_await_time_ms=MAX_AWAIT_MS))
                except PyMongoError as error:
                    if _refused(self, error):
                        return
                    logger.warning("Outbox change stream cannot open; retrying", exc_info=True)
                else:
                    try:
                        backoff.connected(self.ready, self._hub)
                        async for _ in stream:
                            self._hub.signal()
                    except PyMongoError:
                        logger.warning("Outbox change stream lost; reopening", exc_info=True)
                    finally:
                        self.ready.clear()
                        with contextlib.suppress(PyMongoError):
                            await stream.close()
                await asyncio.sleep(backoff.lost(self.ready))
        finally:
            await maybe_await(client.close())


class ChangeStreamWatcher(ListenerThread):
    """Synchronous counterpart of `AsyncChangeStreamWatcher`: a daemon thread."""

    def __init__(self, connections: MongoOutboxConnectionManager, hub: WakeUpHub) -> None:
        """Watch the outbox collection of ``connections``; signal ``hub``."""
        super().__init__(hub, "outbox-mongodb-change-stream")
        self._connections = connections

    @override
    def _run(self) -> None:
        client = self._connections.new_client()
        backoff = Backoff()
        try:
            collection = self._connections.collection(client)
            while not self._stop.is_set():
                try:
                    with collection.watch(PIPELINE, max_await_time_ms=MAX_AWAIT_MS) as stream:
                        backoff.connected(self.ready, self._hub)
                        while not self._stop.is_set():
                            if stream.try_next() is not None:
                                self._hub.signal()
                    return
                except PyMongoError as error:
                    if _refused(self, error):
                        return
                    logger.warning("Outbox change stream lost; reopening", exc_info=True)
                self._stop.wait(backoff.lost(self.ready))
        finally:
            self.ready.clear()
            client.close()
