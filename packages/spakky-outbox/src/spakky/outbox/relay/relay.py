"""Outbox relay background services (sync and async).

Failure taxonomy, as in 8.5: a transport refusal (`EventDeliveryRejectedError`)
spends that message's retry budget and holds back the rest of its key; an
outage (any other exception, or `EventTransportNotRunningError`) spends nobody's
budget; a spent budget abandons the message. Beyond 8.5: the whole claimed
batch is sent and flushed once and acknowledged in one round trip where the
storage can; refused messages come back after an exponential backoff; an
outage or a stop releases the claimed batch at once; a storage error never
ends the relay; a full batch is followed by the next claim without sleeping.
"""

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, override
from uuid import UUID

from spakky.core.pod.annotations.pod import Pod
from spakky.core.service.background import (
    AbstractAsyncBackgroundService,
    AbstractBackgroundService,
)
from spakky.event.error import EventDeliveryRejectedError, EventTransportNotRunningError
from spakky.event.event_publisher import IAsyncEventTransport, IEventTransport
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.ports.metrics import IOutboxMetrics
from spakky.outbox.ports.storage import (
    IAsyncOutboxAdministration,
    IAsyncOutboxBatchAcknowledgement,
    IAsyncOutboxRetryScheduling,
    IAsyncOutboxStorage,
    IAsyncOutboxWakeUp,
    IOutboxAdministration,
    IOutboxBatchAcknowledgement,
    IOutboxRetryScheduling,
    IOutboxStorage,
    IOutboxWakeUp,
)
from spakky.outbox.relay.backoff import backoff_delay

logger = logging.getLogger(__name__)

_SYNC_WAIT_SLICE_SECONDS = 0.25
"""Longest blocking wake-up wait of the sync relay, so a stop is seen promptly."""
_HOUSEKEEPING_INTERVAL_SECONDS = 15.0
"""How often the relay reports the backlog and applies retention."""
_PURGE_BATCH = 10_000
"""Rows one retention purge deletes per round trip."""


def _reason(error: BaseException) -> str:
    """Render a delivery error as the text kept with the message."""
    if isinstance(error, EventDeliveryRejectedError) and error.reasons:
        return f"{type(error).__name__}: {'; '.join(error.reasons)}"
    return f"{type(error).__name__}: {error}"


class _BatchOutcome:
    """What happened to one claimed batch; decides how long the relay rests."""

    claimed: int
    outage: bool

    def __init__(self, claimed: int = 0, outage: bool = False) -> None:
        self.claimed = claimed
        self.outage = outage


class _RelayPolicy:
    """Settings-derived decisions shared by the sync and async relays."""

    def __init__(self, config: OutboxConfig, metrics: IOutboxMetrics | None) -> None:
        self.config = config
        self.metrics = metrics
        self.outage_streak = 0
        self._next_housekeeping = 0.0
        self.last_cycle: float | None = None
        """``time.monotonic()`` when the relay last finished a claim cycle."""

    def cycle_done(self) -> None:
        """Record that a claim cycle finished (relay liveness for health checks)."""
        self.last_cycle = time.monotonic()

    def housekeeping_due(self, wanted: bool) -> bool:
        """Whether to report the backlog / apply retention now (at most every 15 s)."""
        now = time.monotonic()
        if not wanted or now < self._next_housekeeping:
            return False
        self._next_housekeeping = now + _HOUSEKEEPING_INTERVAL_SECONDS
        return True

    def retention_cutoff(self) -> datetime | None:
        """Published messages older than this are purged; None keeps them."""
        retention = self.config.published_retention_seconds
        if retention is None:
            return None
        return datetime.now(UTC) - timedelta(seconds=retention)

    def wants_housekeeping(self) -> bool:
        """Whether anything (metrics or retention) needs the periodic pass."""
        return self.metrics is not None or self.config.published_retention_seconds is not None

    def relayed(self, count: int) -> None:
        if self.metrics is not None and count:
            self.metrics.record_relayed(count)

    def refused(self, abandoned: bool) -> None:
        if self.metrics is not None:
            self.metrics.record_failed(1)
            if abandoned:
                self.metrics.record_abandoned(1)

    def exhausted(self, message: OutboxMessage) -> bool:
        """Whether this refusal spends the message's last retry."""
        return message.retry_count + 1 >= self.config.max_retry_count

    def retry_delay(self, message: OutboxMessage) -> float:
        """Pause before a refused message may be claimed again."""
        return backoff_delay(
            message.retry_count,
            self.config.retry_backoff_base_seconds,
            self.config.retry_backoff_max_seconds,
        )

    def outage_delay(self) -> float:
        """Pause after a storage or transport outage; grows while it lasts."""
        self.outage_streak += 1
        return backoff_delay(
            self.outage_streak - 1,
            min(self.config.polling_interval_seconds, 0.5),
            self.config.outage_backoff_max_seconds,
        )

    def idle_delay(self, outcome: _BatchOutcome) -> float:
        """Pause before the next claim: none after a full batch."""
        if outcome.outage:
            return self.outage_delay()
        self.outage_streak = 0
        if outcome.claimed >= self.config.batch_size:
            return 0.0
        return self.config.polling_interval_seconds


@Pod()
class AsyncOutboxRelayBackgroundService(AbstractAsyncBackgroundService):
    """Claims stored messages and relays them to the async transport."""

    _storage: IAsyncOutboxStorage
    _transport: IAsyncEventTransport
    _config: OutboxConfig

    def __init__(
        self,
        storage: IAsyncOutboxStorage,
        transport: IAsyncEventTransport,
        config: OutboxConfig,
        metrics: IOutboxMetrics | None = None,
    ) -> None:
        """Initialize with async storage, transport, config and optional metrics."""
        self._storage = storage
        self._transport = transport
        self._config = config
        self._policy = _RelayPolicy(config, metrics)

    @property
    def seconds_since_last_cycle(self) -> float | None:
        """Seconds since the relay last finished a claim cycle; None before the first."""
        last = self._policy.last_cycle
        return None if last is None else time.monotonic() - last

    @override
    async def initialize_async(self) -> None:
        """Nothing to prepare: storages and transports own their connections."""
        return

    @override
    async def dispose_async(self) -> None:
        """Release the storage's wake-up resources; `run_async` left no claim behind."""
        if isinstance(self._storage, IAsyncOutboxWakeUp):
            await self._storage.close_wake_up()

    @override
    async def run_async(self) -> None:
        """Relay until stopped; storage errors are logged and retried, never fatal."""
        logger.info(
            "Outbox relay started (%s, batch %d)",
            type(self._storage).__name__,
            self._config.batch_size,
        )
        while not self._stop_event.is_set():
            try:
                outcome = await self.relay_batch()
                if self._policy.housekeeping_due(self._policy.wants_housekeeping()):
                    await self.housekeeping()
            except Exception:
                logger.exception("Outbox storage failed; the relay backs off and retries")
                outcome = _BatchOutcome(outage=True)
            self._policy.cycle_done()
            delay = self._policy.idle_delay(outcome)
            if delay > 0 and not self._stop_event.is_set():
                await self._rest(delay, wake_on_commit=not outcome.outage)
        logger.info("Outbox relay stopped")

    async def housekeeping(self) -> None:
        """Report the backlog and purge published messages past retention."""
        storage = self._storage
        if not isinstance(storage, IAsyncOutboxAdministration):
            return
        if self._policy.metrics is not None:
            stats = await storage.stats()
            self._policy.metrics.record_backlog(stats.pending, stats.oldest_pending_age_seconds)
        cutoff = self._policy.retention_cutoff()
        while cutoff is not None and await storage.purge_published(cutoff, _PURGE_BATCH) >= _PURGE_BATCH:
            logger.info("Outbox retention purged %d published messages; continuing", _PURGE_BATCH)

    async def relay_batch(self) -> _BatchOutcome:
        """Claim one batch, send it, flush once, and settle every message."""
        messages = await self._storage.fetch_pending(
            self._config.batch_size, self._config.max_retry_count
        )
        if not messages:
            return _BatchOutcome()
        outcome = _BatchOutcome(claimed=len(messages))
        halted: set[str] = set()
        held: list[OutboxMessage] = []
        sent: list[OutboxMessage] = []
        for index, message in enumerate(messages):
            if self._stop_event.is_set():
                await self._release([*held, *messages[index:]])
                break
            if message.partition_key is not None and message.partition_key in halted:
                held.append(message)
                continue
            try:
                await self._transport.send(
                    message.event_name,
                    message.payload,
                    message.headers,
                    message.partition_key,
                )
            except EventDeliveryRejectedError as error:
                logger.warning("Transport refused outbox message %s: %s", message.id, error)
                await self._refuse(message, error, halted)
                continue
            except Exception as error:
                # A closed or failing transport is nobody's fault: release everything
                # not yet confirmed so other relays (or this one, later) retry it now.
                level = logging.INFO if isinstance(error, EventTransportNotRunningError) else logging.ERROR
                logger.log(level, "Transport unavailable; releasing %d claimed messages: %s", len(messages), error)
                await self._release([*sent, *held, *messages[index:]])
                outcome.outage = True
                return outcome
            sent.append(message)
        if sent:
            outcome.outage = await self._flush_and_acknowledge(sent, halted, held)
        if held:
            await self._release(held)
        return outcome

    async def _flush_and_acknowledge(
        self,
        sent: list[OutboxMessage],
        halted: set[str],
        held: list[OutboxMessage],
    ) -> bool:
        """Flush once and acknowledge; on a failed flush confirm one by one.

        Returns:
            True when the transport failed as a whole (an outage).
        """
        try:
            await self._transport.flush()
        except EventDeliveryRejectedError:
            logger.warning("Flush refused part of a batch of %d; confirming one by one", len(sent))
            return await self._confirm_one_by_one(sent, halted, held)
        except Exception as error:
            logger.error("Flush failed; releasing %d messages: %s", len(sent), error)
            await self._release(sent)
            return True
        await self._acknowledge([m.id for m in sent])
        return False

    async def _confirm_one_by_one(
        self,
        messages: list[OutboxMessage],
        halted: set[str],
        held: list[OutboxMessage],
    ) -> bool:
        """Replay a refused flush a message at a time so the refusal lands on its owner."""
        for index, message in enumerate(messages):
            if message.partition_key is not None and message.partition_key in halted:
                held.append(message)
                continue
            try:
                await self._transport.send(
                    message.event_name, message.payload, message.headers, message.partition_key
                )
                await self._transport.flush()
            except EventDeliveryRejectedError as error:
                await self._refuse(message, error, halted)
                continue
            except Exception as error:
                logger.error("Transport failed while confirming; releasing the rest: %s", error)
                await self._release(messages[index:])
                return True
            await self._acknowledge([message.id])
        return False

    async def _refuse(
        self, message: OutboxMessage, error: BaseException, halted: set[str]
    ) -> None:
        """Spend one retry (with backoff) or abandon; hold back the message's key."""
        if message.partition_key is not None:
            halted.add(message.partition_key)
        storage = self._storage
        self._policy.refused(abandoned=self._policy.exhausted(message))
        if self._policy.exhausted(message):
            logger.error("Abandoning outbox message %s after %d attempts", message.id, message.retry_count + 1)
            if isinstance(storage, IAsyncOutboxRetryScheduling):
                await storage.abandon(message.id, _reason(error))
            else:
                await storage.mark_abandoned(message.id)
            return
        if isinstance(storage, IAsyncOutboxRetryScheduling):
            await storage.schedule_retry(message.id, self._policy.retry_delay(message), _reason(error))
        else:
            await storage.increment_retry(message.id)

    async def _acknowledge(self, ids: Sequence[UUID]) -> None:
        storage = self._storage
        if isinstance(storage, IAsyncOutboxBatchAcknowledgement):
            await storage.mark_published_many(ids)
        else:
            for message_id in ids:
                await storage.mark_published(message_id)
        self._policy.relayed(len(ids))

    async def _release(self, messages: Sequence[OutboxMessage]) -> None:
        """Return claims now where the storage can; otherwise they expire on their own."""
        storage = self._storage
        if messages and isinstance(storage, IAsyncOutboxRetryScheduling):
            await storage.release([m.id for m in messages])

    async def _rest(self, delay: float, *, wake_on_commit: bool) -> None:
        """Sleep up to ``delay``; a stop, or a commit when the storage can tell, wakes early."""
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._stop_event.wait())}
        storage = self._storage
        if wake_on_commit and isinstance(storage, IAsyncOutboxWakeUp):
            waiters.add(asyncio.ensure_future(storage.wait_for_messages(delay)))
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)


@Pod()
class OutboxRelayBackgroundService(AbstractBackgroundService):
    """Claims stored messages and relays them to the sync transport, in a thread."""

    _storage: IOutboxStorage
    _transport: IEventTransport
    _config: OutboxConfig

    def __init__(
        self,
        storage: IOutboxStorage,
        transport: IEventTransport,
        config: OutboxConfig,
        metrics: IOutboxMetrics | None = None,
    ) -> None:
        """Initialize with storage, transport, config and optional metrics."""
        self._storage = storage
        self._transport = transport
        self._config = config
        self._policy = _RelayPolicy(config, metrics)
        self._stop_event = threading.Event()

    @property
    def seconds_since_last_cycle(self) -> float | None:
        """Seconds since the relay last finished a claim cycle; None before the first."""
        last = self._policy.last_cycle
        return None if last is None else time.monotonic() - last

    @override
    def initialize(self) -> None:
        """Nothing to prepare: storages and transports own their connections."""
        return

    @override
    def dispose(self) -> None:
        """Release the storage's wake-up resources; `run` left no claim behind."""
        if isinstance(self._storage, IOutboxWakeUp):
            self._storage.close_wake_up()

    @override
    def run(self) -> None:
        """Relay until stopped; storage errors are logged and retried, never fatal."""
        logger.info("Outbox relay started (%s, sync)", type(self._storage).__name__)
        while not self._stop_event.is_set():
            try:
                outcome = self.relay_batch()
                if self._policy.housekeeping_due(self._policy.wants_housekeeping()):
                    self.housekeeping()
            except Exception:
                logger.exception("Outbox storage failed; the relay backs off and retries")
                outcome = _BatchOutcome(outage=True)
            self._policy.cycle_done()
            delay = self._policy.idle_delay(outcome)
            if delay > 0:
                self._rest(delay, wake_on_commit=not outcome.outage)
        logger.info("Outbox relay stopped")

    def housekeeping(self) -> None:
        """Report the backlog and purge published messages past retention."""
        storage = self._storage
        if not isinstance(storage, IOutboxAdministration):
            return
        if self._policy.metrics is not None:
            stats = storage.stats()
            self._policy.metrics.record_backlog(stats.pending, stats.oldest_pending_age_seconds)
        cutoff = self._policy.retention_cutoff()
        while cutoff is not None and storage.purge_published(cutoff, _PURGE_BATCH) >= _PURGE_BATCH:
            logger.info("Outbox retention purged %d published messages; continuing", _PURGE_BATCH)

    def relay_batch(self) -> _BatchOutcome:
        """Claim one batch, send it, flush once, and settle every message."""
        messages = self._storage.fetch_pending(
            self._config.batch_size, self._config.max_retry_count
        )
        if not messages:
            return _BatchOutcome()
        outcome = _BatchOutcome(claimed=len(messages))
        halted: set[str] = set()
        held: list[OutboxMessage] = []
        sent: list[OutboxMessage] = []
        for index, message in enumerate(messages):
            if self._stop_event.is_set():
                self._release([*held, *messages[index:]])
                break
            if message.partition_key is not None and message.partition_key in halted:
                held.append(message)
                continue
            try:
                self._transport.send(
                    message.event_name, message.payload, message.headers, message.partition_key
                )
            except EventDeliveryRejectedError as error:
                logger.warning("Transport refused outbox message %s: %s", message.id, error)
                self._refuse(message, error, halted)
                continue
            except Exception as error:
                level = logging.INFO if isinstance(error, EventTransportNotRunningError) else logging.ERROR
                logger.log(level, "Transport unavailable; releasing %d claimed messages: %s", len(messages), error)
                self._release([*sent, *held, *messages[index:]])
                outcome.outage = True
                return outcome
            sent.append(message)
        if sent:
            outcome.outage = self._flush_and_acknowledge(sent, halted, held)
        if held:
            self._release(held)
        return outcome

    def _flush_and_acknowledge(
        self, sent: list[OutboxMessage], halted: set[str], held: list[OutboxMessage]
    ) -> bool:
        """Flush once and acknowledge; on a refused flush confirm one by one."""
        try:
            self._transport.flush()
        except EventDeliveryRejectedError:
            logger.warning("Flush refused part of a batch of %d; confirming one by one", len(sent))
            return self._confirm_one_by_one(sent, halted, held)
        except Exception as error:
            logger.error("Flush failed; releasing %d messages: %s", len(sent), error)
            self._release(sent)
            return True
        self._acknowledge([m.id for m in sent])
        return False

    def _confirm_one_by_one(
        self, messages: list[OutboxMessage], halted: set[str], held: list[OutboxMessage]
    ) -> bool:
        """Replay a refused flush a message at a time so the refusal lands on its owner."""
        for index, message in enumerate(messages):
            if message.partition_key is not None and message.partition_key in halted:
                held.append(message)
                continue
            try:
                self._transport.send(
                    message.event_name, message.payload, message.headers, message.partition_key
                )
                self._transport.flush()
            except EventDeliveryRejectedError as error:
                self._refuse(message, error, halted)
                continue
            except Exception as error:
                logger.error("Transport failed while confirming; releasing the rest: %s", error)
                self._release(messages[index:])
                return True
            self._acknowledge([message.id])
        return False

    def _refuse(self, message: OutboxMessage, error: BaseException, halted: set[str]) -> None:
        """Spend one retry (with backoff) or abandon; hold back the message's key."""
        if message.partition_key is not None:
            halted.add(message.partition_key)
        storage = self._storage
        self._policy.refused(abandoned=self._policy.exhausted(message))
        if self._policy.exhausted(message):
            logger.error("Abandoning outbox message %s after %d attempts", message.id, message.retry_count + 1)
            if isinstance(storage, IOutboxRetryScheduling):
                storage.abandon(message.id, _reason(error))
            else:
                storage.mark_abandoned(message.id)
            return
        if isinstance(storage, IOutboxRetryScheduling):
            storage.schedule_retry(message.id, self._policy.retry_delay(message), _reason(error))
        else:
            storage.increment_retry(message.id)

    def _acknowledge(self, ids: Sequence[UUID]) -> None:
        storage = self._storage
        if isinstance(storage, IOutboxBatchAcknowledgement):
            storage.mark_published_many(ids)
        else:
            for message_id in ids:
                storage.mark_published(message_id)
        self._policy.relayed(len(ids))

    def _release(self, messages: Sequence[OutboxMessage]) -> None:
        """Return claims now where the storage can; otherwise they expire on their own."""
        storage = self._storage
        if messages and isinstance(storage, IOutboxRetryScheduling):
            storage.release([m.id for m in messages])

    def _rest(self, delay: float, *, wake_on_commit: bool) -> None:
        """Sleep up to ``delay``; a stop, or a commit when the storage can tell, wakes early."""
        storage = self._storage
        if not (wake_on_commit and isinstance(storage, IOutboxWakeUp)):
            self._stop_event.wait(delay)
            return
        remaining = delay
        while remaining > 0 and not self._stop_event.is_set():
            step = min(remaining, _SYNC_WAIT_SLICE_SECONDS)
            if storage.wait_for_messages(step):
                return
            remaining -= step
