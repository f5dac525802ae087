"""Reading the backlog when a metrics backend asks for it, from whichever thread it asks.

The backlog gauges are observed by the metrics backend (an exporter's thread,
a scrape handler), not pushed on a timer: `IOutboxMetrics.watch_backlog` is
given one of these readers, and each call reads `stats` once with a
server-side timeout. The async reader hands the read to the loop the
storage's connections belong to; the sync one reads in the calling thread.
"""

import asyncio
import threading

from spakky.outbox.common.stats import OutboxStats, stats_timeout
from spakky.outbox.ports.storage import (
    IAsyncOutboxAdministration,
    IOutboxAdministration,
)

BACKLOG_READ_TIMEOUT_SECONDS = 2.0
"""How long one gauge read may take; past it the gauges keep their last value."""


class _BacklogReaderBase[S: (IOutboxAdministration, IAsyncOutboxAdministration)]:
    """The storage both readers read and the server-side timeout of each read."""

    def __init__(self, storage: S, timeout_seconds: float | None = BACKLOG_READ_TIMEOUT_SECONDS) -> None:
        """Read ``storage``, each read stopped by the server after ``timeout_seconds``."""
        self._storage = storage
        self._timeout = stats_timeout(timeout_seconds)


class AsyncBacklogReader(_BacklogReaderBase[IAsyncOutboxAdministration]):
    """Reads an async storage's backlog on its own loop, from another thread."""

    def __init__(
        self, storage: IAsyncOutboxAdministration, timeout_seconds: float | None = BACKLOG_READ_TIMEOUT_SECONDS
    ) -> None:
        """Read ``storage`` on the running loop (create it there, e.g. in the relay's initialize)."""
        super().__init__(storage, timeout_seconds)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def __call__(self) -> OutboxStats | None:
        """The backlog now; None when it cannot be read from here (the loop's own thread, a stopped loop)."""
        if threading.get_ident() == self._loop_thread or self._loop.is_closed() or not self._loop.is_running():
            return None
        future = asyncio.run_coroutine_threadsafe(self._storage.stats(timeout_seconds=self._timeout), self._loop)
        try:
            # The server stops the read at the timeout; the margin covers the hand-over.
            return future.result(self._timeout + 1.0)
        except TimeoutError:
            future.cancel()
            raise


class BacklogReader(_BacklogReaderBase[IOutboxAdministration]):
    """Reads a sync storage's backlog in the calling thread."""

    def __call__(self) -> OutboxStats | None:
        """The backlog now."""
        return self._storage.stats(timeout_seconds=self._timeout)
