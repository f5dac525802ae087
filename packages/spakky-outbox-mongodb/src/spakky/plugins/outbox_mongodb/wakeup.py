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
import contextvars
import logging
import threading
from typing import Any

from pymongo.errors import OperationFailure, PyMongoError
from spakky.outbox.backend.wakeup import WakeUpHub
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


def _unsupported(error: PyMongoError) -> None:
    logger.info(
        "MongoDB change streams unavailable (%s); outbox relays wake in process and poll",
        error,
    )


class AsyncChangeStreamWatcher:
    """Keeps one change stream open on the running event loop while a relay waits."""

    def __init__(self, connections: MongoOutboxConnectionManager, hub: WakeUpHub) -> None:
        """Watch the outbox collection of ``connections``; signal ``hub``."""
        self._connections = connections
        self._hub = hub
        self._task: asyncio.Task[None] | None = None
        self.unsupported = False
        """Set once the server refused to open a change stream."""
        self.ready = asyncio.Event()
        """Set while a stream is open (used by tests)."""

    def start(self) -> None:
        """Start watching in a background task (idempotent)."""
        if self._task is None and not self.unsupported:
            # A fresh context: never inherit a session bound by a use case.
            self._task = asyncio.get_running_loop().create_task(
                self._run(), context=contextvars.Context()
            )

    async def stop(self) -> None:
        """Stop watching and close the watcher's client."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        client = self._connections.new_async_client()
        backoff = 0.5
        reconnecting = False
        try:
            collection = self._connections.async_collection(client)
            while True:
                try:
                    stream = await maybe_await(collection.watch(PIPELINE, max_await_time_ms=MAX_AWAIT_MS))
                except PyMongoError as error:
                    if refuses_change_streams(error):
                        self.unsupported = True
                        _unsupported(error)
                        return
                    logger.warning("Outbox change stream cannot open; retrying", exc_info=True)
                else:
                    try:
                        self.ready.set()
                        if reconnecting:
                            self._hub.signal()  # commits may have been missed meanwhile
                        backoff = 0.5
                        async for _ in stream:
                            self._hub.signal()
                    except PyMongoError:
                        logger.warning("Outbox change stream lost; reopening", exc_info=True)
                    finally:
                        self.ready.clear()
                        with contextlib.suppress(PyMongoError):
                            await stream.close()
                reconnecting = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        finally:
            await maybe_await(client.close())


class ChangeStreamWatcher:
    """Synchronous counterpart of `AsyncChangeStreamWatcher`: a daemon thread."""

    def __init__(self, connections: MongoOutboxConnectionManager, hub: WakeUpHub) -> None:
        """Watch the outbox collection of ``connections``; signal ``hub``."""
        self._connections = connections
        self._hub = hub
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.unsupported = False
        """Set once the server refused to open a change stream."""
        self.ready = threading.Event()
        """Set while a stream is open (used by tests)."""

    def start(self) -> None:
        """Start the watching thread (idempotent)."""
        if self._thread is None and not self.unsupported:
            self._thread = threading.Thread(
                target=self._run, name="outbox-mongodb-change-stream", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread (within one getMore wait) and close its client."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        client = self._connections.new_client()
        backoff = 0.5
        reconnecting = False
        try:
            collection = self._connections.collection(client)
            while not self._stop.is_set():
                try:
                    with collection.watch(PIPELINE, max_await_time_ms=MAX_AWAIT_MS) as stream:
                        self.ready.set()
                        if reconnecting:
                            self._hub.signal()
                        backoff = 0.5
                        while not self._stop.is_set():
                            if stream.try_next() is not None:
                                self._hub.signal()
                    return
                except PyMongoError as error:
                    if refuses_change_streams(error):
                        self.unsupported = True
                        _unsupported(error)
                        return
                    logger.warning("Outbox change stream lost; reopening", exc_info=True)
                self.ready.clear()
                reconnecting = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        finally:
            self.ready.clear()
            client.close()
