"""The inbox sweeper: the consuming application deletes records past the dedup window itself.

On a store whose records expire by themselves (Redis's ``PX``, MongoDB's TTL
index) it does nothing. Elsewhere (SQL) it deletes, every
``SPAKKY_OUTBOX__INBOX__SWEEP_INTERVAL_SECONDS``, the records written before
the window in statements of at most ``SWEEP_BATCH`` rows, until one deletes
fewer, so no statement holds the table for long. A storage error is logged and
the next interval tries again: a sweep is never worth stopping a consumer for.
"""

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.core.service.background import AbstractAsyncBackgroundService
from spakky.outbox.inbox.config import InboxConfig
from spakky.outbox.inbox.error import InboxNotFoundError
from spakky.outbox.ports.inbox import IAsyncInboxStorage

logger = logging.getLogger(__name__)


@Pod()
class AsyncInboxSweeperBackgroundService(AbstractAsyncBackgroundService):
    """Deletes inbox records past the dedup window, in bounded batches, every sweep interval."""

    def __init__(self, config: InboxConfig, storage: IAsyncInboxStorage | None) -> None:
        """Keep the settings and the inbox (None: no storage with an inbox is selected)."""
        self._config = config
        self._storage = storage

    @override
    async def initialize_async(self) -> None:
        """Nothing to open: the storage owns its connections."""

    @override
    async def dispose_async(self) -> None:
        """Nothing to close: `run_async` ended between statements."""

    @override
    async def run_async(self) -> None:
        """Sweep every interval until the application stops; storage errors wait for the next one."""
        storage = self._storage
        if storage is None or storage.expires_by_itself:
            return
        interval = self._config.sweep_interval_seconds
        logger.info("Inbox sweeper started (%s, every %gs)", storage.location(), interval)
        while not await self._stopped_within(interval):
            try:
                removed = await self._sweep(storage)
            except InboxNotFoundError:
                continue  # no record was ever written here: nothing to sweep yet
            except Exception:
                logger.warning("Inbox sweep failed; retrying in %gs", interval, exc_info=True)
                continue
            if removed > 0:
                logger.info("Inbox sweep removed %d records past the window", removed)
        logger.info("Inbox sweeper stopped")

    async def _sweep(self, storage: IAsyncInboxStorage) -> int:
        """Delete every record written before the window, ``SWEEP_BATCH`` per statement; how many went."""
        before = datetime.now(UTC) - timedelta(seconds=self._config.window_seconds)
        batch = self._config.sweep_batch
        removed = 0
        while not self._stop_event.is_set():
            deleted = await storage.purge(before, batch)
            removed += deleted
            if deleted < batch:
                break
        return removed

    async def _stopped_within(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True as soon as the application stops."""
        try:
            await asyncio.wait_for(self._stop_event.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True
