"""Outbox relay background services (sync and async).

Failure taxonomy, as in 8.5: a transport refusal (`EventDeliveryRejectedError`)
spends that message's retry budget and holds back the rest of its key; an
outage spends nobody's budget; a spent budget abandons the message.

Refined: a plain exception from one message while others of the batch go
through is that message's fault: it is retried alone at once and, failing
again, counts as refused (budget, reason, key released). Only when nothing of
the batch gets through (or a closed transport, or three plain failures in a
row) is it an outage, and the batch is released untouched.

Beyond 8.5: the whole claimed batch is sent, flushed once and acknowledged in
one round trip where the storage can. Whatever was sent is acknowledged with
retries until the storage takes it (or the claim is provably over), and no new
claim is made meanwhile, so a storage restart between flush and acknowledgement
costs seconds, not a claim timeout. On storages with liveness the relay renews
its claims while it works, so a dead relay's messages free up within a lease.
A storage error never ends the relay; any batch that found work is followed by the next
claim without sleeping, and an empty claim just after one by a short pause that
grows to the polling interval; a stop finishes what was sent and releases the rest.
"""

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
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
from spakky.outbox.common.config import OutboxConfig, RelayMode
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.error import OutboxStorageFlavourMissingError
from spakky.outbox.ports.metrics import IOutboxMetrics
from spakky.outbox.ports.storage import (
    IAsyncOutboxAdministration,
    IAsyncOutboxBatchAcknowledgement,
    IAsyncOutboxLiveness,
    IAsyncOutboxRetryScheduling,
    IAsyncOutboxStorage,
    IAsyncOutboxWakeUp,
    IOutboxAdministration,
    IOutboxBatchAcknowledgement,
    IOutboxLiveness,
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
_OUTAGE_STREAK = 3
"""Plain send failures in a row that make a batch an outage rather than poison."""
_OUTAGE_BACKOFF_BASE_SECONDS = 0.1
"""First pause after an outage: a one-second database restart costs about two."""
_SETTLE_BACKOFF_BASE_SECONDS = 0.05
"""First pause before retrying an acknowledgement the storage failed to take."""
_SETTLE_BACKOFF_MAX_SECONDS = 1.0
"""Longest pause between acknowledgement retries, so recovery is seen within a second."""
_STOP_GRACE_SECONDS = 5.0
"""How long a stopping relay keeps trying to settle what it sent."""
_CONTENDED_BACKOFF_BASE_SECONDS = 0.05
"""First pause after an empty claim that followed work: other relays may have
taken the rows this one chose, and the backlog may not be drained."""


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


class _PoisonMemory:
    """Messages known to fail on their own, not because the transport is down.

    Known: this relay saw the message fail alone while the transport delivered
    others, or any relay refused it before for a plain error (its stored
    ``last_error`` says so). Such a message failing again counts as refused
    even in a batch where nothing else was sent, so a lone poison message
    still runs out of budget and is abandoned instead of stalling its key.
    """

    _LIMIT = 10_000
    _REFUSAL = f"{EventDeliveryRejectedError.__name__}:"

    def __init__(self) -> None:
        self._ids: dict[UUID, None] = {}

    def known(self, message: OutboxMessage) -> bool:
        if message.id in self._ids:
            return True
        error = message.last_error
        return message.retry_count > 0 and error is not None and not error.startswith(self._REFUSAL)

    def remember(self, message_id: UUID) -> None:
        self._ids[message_id] = None
        if len(self._ids) > self._LIMIT:
            del self._ids[next(iter(self._ids))]

    def forget(self, message_id: UUID) -> None:
        self._ids.pop(message_id, None)


class _Batch:
    """One claimed batch as the relay works through it.

    Sending only sorts messages into lists; every storage write (acknowledge,
    refuse, release) happens afterwards in `settle_plan` order, so claims are
    never renewed and settled at the same time.
    """

    def __init__(self, messages: Sequence[OutboxMessage], claim_timeout: float) -> None:
        self.messages = messages
        self.claimed_at = time.monotonic()
        self.claim_deadline = self.claimed_at + claim_timeout
        self.sent: list[OutboxMessage] = []
        self.delivered: list[OutboxMessage] = []
        self.refused: list[tuple[OutboxMessage, BaseException]] = []
        self.suspects: list[tuple[OutboxMessage, BaseException]] = []
        self.release: list[OutboxMessage] = []
        self.halted: set[str] = set()
        self.outage: BaseException | None = None
        self.lost = False
        self._streak = 0

    def stopped_sending(self, stopping: bool) -> bool:
        """Whether to send nothing more (stop, outage, or claims lost)."""
        return stopping or self.outage is not None or self.lost

    def blocked(self, message: OutboxMessage) -> bool:
        """Whether an earlier message of this key failed, so this one must wait."""
        return message.partition_key is not None and message.partition_key in self.halted

    def halt(self, message: OutboxMessage) -> None:
        if message.partition_key is not None:
            self.halted.add(message.partition_key)

    def on_sent(self, message: OutboxMessage) -> None:
        self.sent.append(message)
        self._streak = 0

    def on_refused(self, message: OutboxMessage, error: BaseException) -> None:
        logger.warning("Transport refused outbox message %s: %s", message.id, error)
        self.refused.append((message, error))
        self.halt(message)
        self._streak = 0

    def on_failed(self, message: OutboxMessage, error: Exception, known_poison: bool) -> None:
        """A plain error: the message is suspect until the batch shows whose fault it is."""
        self.halt(message)
        if isinstance(error, EventTransportNotRunningError):
            self.outage = error
            self.release.append(message)
            return
        self.suspects.append((message, error))
        if known_poison:
            return
        self._streak += 1
        if self._streak >= _OUTAGE_STREAK:
            self.outage = error

    def on_flush_failed(self, error: Exception) -> None:
        """The transport failed as a whole: nothing sent was confirmed."""
        logger.error("Flush failed; releasing %d messages: %s", len(self.sent), error)
        self.outage = error
        self.release.extend(self.sent)
        self.sent = []

    def judge_suspects(self, poison: _PoisonMemory) -> list[OutboxMessage]:
        """Decide the suspects' fate; return those to retry alone.

        Something of the batch got through: the failures were the messages'
        own, and each gets one more try alone. Nothing got through: if only
        messages already known as poison failed, they count as refused again;
        any other failure means the transport is down, and every suspect goes
        back untouched with nobody's budget spent.
        """
        suspects, self.suspects = self.suspects, []
        if not suspects:
            return []
        if self.outage is None and self.delivered:
            for message, error in suspects:
                logger.warning(
                    "Outbox message %s failed while others went through; retrying it alone: %s",
                    message.id, error,
                )
            return [m for m, _ in suspects]
        if self.outage is None and all(poison.known(m) for m, _ in suspects):
            self.refused.extend(suspects)
            return []
        self.outage = self.outage or suspects[-1][1]
        logger.error("Transport unavailable; releasing the batch untouched: %s", self.outage)
        self.release.extend(m for m, _ in suspects)
        return []

    def holding(self) -> list[UUID]:
        """Ids this relay still holds (everything claimed, until settling starts)."""
        return [m.id for m in self.messages]


class _RelayPolicy:
    """Settings-derived decisions shared by the sync and async relays."""

    def __init__(self, config: OutboxConfig, metrics: IOutboxMetrics | None) -> None:
        self.config = config
        self.metrics = metrics
        self.outage_streak = 0
        self.empty_since_work: int | None = None
        """Empty claims in a row since the last one that found work (None: no work yet)."""
        self._next_housekeeping = 0.0
        self.last_cycle: float | None = None
        """``time.monotonic()`` when the relay last finished a claim cycle."""
        self.poison = _PoisonMemory()

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

    def renew_interval(self) -> float:
        """How often a relay renews the claims it works on (liveness storages)."""
        return self.config.claim_lease_seconds / 3

    def settle_delay(self, attempt: int) -> float:
        """Pause before retrying a failed acknowledgement, refusal or release."""
        return backoff_delay(attempt, _SETTLE_BACKOFF_BASE_SECONDS, _SETTLE_BACKOFF_MAX_SECONDS)

    def keep_settling(self, batch: _Batch, stop_requested_at: float | None) -> bool:
        """Whether a failed settle is worth retrying.

        Until the claim is provably over (the claim timeout passed since the
        claim: another relay may own the message) or a stop's grace ran out.
        """
        now = time.monotonic()
        if now >= batch.claim_deadline:
            return False
        return stop_requested_at is None or now - stop_requested_at < _STOP_GRACE_SECONDS

    def outage_delay(self) -> float:
        """Pause after a storage or transport outage; grows while it lasts."""
        self.outage_streak += 1
        return backoff_delay(
            self.outage_streak - 1,
            min(self.config.polling_interval_seconds, _OUTAGE_BACKOFF_BASE_SECONDS),
            self.config.outage_backoff_max_seconds,
        )

    def idle_delay(self, outcome: _BatchOutcome) -> float:
        """Pause before the next claim: none after a batch that found work.

        A short batch may only mean other relays hold the rest of the backlog
        (keys, locked rows): claiming again at once costs one cheap claim when
        the outbox is really drained, while resting would idle through a backlog.
        An empty claim right after work may have lost its rows to another relay's
        concurrent claim, so the pause grows from 50 ms to the polling interval
        over a few empty claims instead of starting there.
        """
        if outcome.outage:
            return self.outage_delay()
        self.outage_streak = 0
        if outcome.claimed > 0:
            self.empty_since_work = 0
            return 0.0
        polling = self.config.polling_interval_seconds
        if self.empty_since_work is None:
            return polling
        delay = _CONTENDED_BACKOFF_BASE_SECONDS * 2**self.empty_since_work
        if delay >= polling:
            self.empty_since_work = None
            return polling
        self.empty_since_work += 1
        return delay


def _missing_storage(mode: RelayMode, wanted: str, other: str) -> OutboxStorageFlavourMissingError:
    return OutboxStorageFlavourMissingError(
        f"SPAKKY_OUTBOX__RELAY={mode} needs an {wanted} Pod and none is registered. "
        f"Register one, or set SPAKKY_OUTBOX__RELAY to the flavour of the storage you "
        f"have ({other}), or to off"
    )


@Pod()
class AsyncOutboxRelayBackgroundService(AbstractAsyncBackgroundService):
    """Claims stored messages and relays them to the async transport."""

    _storage: IAsyncOutboxStorage
    _transport: IAsyncEventTransport
    _config: OutboxConfig

    def __init__(
        self,
        storage: IAsyncOutboxStorage | None,
        transport: IAsyncEventTransport,
        config: OutboxConfig,
        metrics: IOutboxMetrics | None = None,
    ) -> None:
        """Initialize with async storage, transport, config and optional metrics.

        Raises:
            OutboxStorageFlavourMissingError: No asynchronous storage is registered.
        """
        if storage is None:
            raise _missing_storage(RelayMode.ASYNC, "IAsyncOutboxStorage", "sync")
        self._storage = storage
        self._transport = transport
        self._config = config
        self._policy = _RelayPolicy(config, metrics)
        self._stop_requested_at: float | None = None

    @property
    def seconds_since_last_cycle(self) -> float | None:
        """Seconds since the relay last finished a claim cycle; None before the first."""
        last = self._policy.last_cycle
        return None if last is None else time.monotonic() - last

    @override
    async def initialize_async(self) -> None:
        """Nothing to prepare: storages and transports own their connections."""
        self._stop_requested_at = None

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
        while not self._stopping():
            try:
                outcome = await self.relay_batch()
                if self._policy.housekeeping_due(self._policy.wants_housekeeping()):
                    await self.housekeeping()
            except Exception:
                logger.exception("Outbox storage failed; the relay backs off and retries")
                outcome = _BatchOutcome(outage=True)
            self._policy.cycle_done()
            delay = self._policy.idle_delay(outcome)
            if delay > 0 and not self._stopping():
                await self._rest(delay, wake_on_commit=not outcome.outage)
        logger.info("Outbox relay stopped")

    def _stopping(self) -> bool:
        if self._stop_event.is_set():
            if self._stop_requested_at is None:
                self._stop_requested_at = time.monotonic()
            return True
        return False

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
        batch = _Batch(messages, self._config.claim_timeout_seconds)
        keeper = self._keep_claims(batch)
        try:
            await self._send_all(batch)
            await self._flush(batch)
            for message in batch.judge_suspects(self._policy.poison):
                await self._send_alone(batch, message)
        finally:
            if keeper is not None:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
        await self._settle(batch)
        return _BatchOutcome(claimed=len(messages), outage=batch.outage is not None)

    async def _send_all(self, batch: _Batch) -> None:
        for message in batch.messages:
            if batch.stopped_sending(self._stopping()) or batch.blocked(message):
                batch.release.append(message)
                continue
            try:
                await self._send(message)
            except EventDeliveryRejectedError as error:
                batch.on_refused(message, error)
            except Exception as error:
                batch.on_failed(message, error, self._policy.poison.known(message))
            else:
                batch.on_sent(message)

    async def _send(self, message: OutboxMessage) -> None:
        await self._transport.send(
            message.event_name, message.payload, message.headers, message.partition_key
        )

    async def _flush(self, batch: _Batch) -> None:
        """Flush once; on a refused flush confirm one by one."""
        if not batch.sent:
            return
        try:
            await self._transport.flush()
        except EventDeliveryRejectedError:
            logger.warning("Flush refused part of a batch of %d; confirming one by one", len(batch.sent))
            await self._confirm_one_by_one(batch)
        except Exception as error:
            batch.on_flush_failed(error)
        else:
            batch.delivered.extend(batch.sent)

    async def _confirm_one_by_one(self, batch: _Batch) -> None:
        """Replay a refused flush a message at a time so the refusal lands on its owner."""
        sent, batch.sent = batch.sent, []
        for index, message in enumerate(sent):
            if batch.blocked(message):
                batch.release.append(message)
                continue
            try:
                await self._send(message)
                await self._transport.flush()
            except EventDeliveryRejectedError as error:
                batch.on_refused(message, error)
                continue
            except Exception as error:
                logger.error("Transport failed while confirming; releasing the rest: %s", error)
                batch.outage = error
                batch.release.extend(sent[index:])
                return
            batch.delivered.append(message)

    async def _send_alone(self, batch: _Batch, message: OutboxMessage) -> None:
        """Retry a suspect alone: delivered, or refused with its own error."""
        try:
            await self._send(message)
            await self._transport.flush()
        except Exception as error:
            logger.error("Outbox message %s failed again alone; counting it as refused", message.id)
            self._policy.poison.remember(message.id)
            batch.refused.append((message, error))
            return
        batch.delivered.append(message)

    def _keep_claims(self, batch: _Batch) -> asyncio.Task[None] | None:
        storage = self._storage
        if not isinstance(storage, IAsyncOutboxLiveness):
            return None

        async def renew() -> None:
            interval = self._policy.renew_interval()
            while True:
                await asyncio.sleep(interval)
                held = batch.holding()
                try:
                    kept = await storage.renew_claims(held)
                except Exception as error:
                    logger.warning("Could not renew %d outbox claims: %s", len(held), error)
                    continue
                if kept < len(held):
                    logger.warning(
                        "Lost %d of %d outbox claims to another relay; sending nothing more of this batch",
                        len(held) - kept, len(held),
                    )
                    batch.lost = True
                    return

        return asyncio.get_running_loop().create_task(renew())

    async def _settle(self, batch: _Batch) -> None:
        """Acknowledge what was delivered, then record refusals, then release the rest."""
        storage = self._storage
        if batch.delivered:
            ids = [m.id for m in batch.delivered]
            await self._persist(batch, "acknowledge", lambda: self._acknowledge(ids))
            self._policy.relayed(len(ids))
            for message_id in ids:
                self._policy.poison.forget(message_id)
        for message, error in batch.refused:
            await self._persist(batch, "refuse", lambda m=message, e=error: self._refuse(m, e))
        if batch.release and isinstance(storage, IAsyncOutboxRetryScheduling):
            ids = [m.id for m in batch.release]
            await self._persist(batch, "release", lambda: storage.release(ids))

    async def _persist(self, batch: _Batch, what: str, write: Callable[[], Awaitable[None]]) -> None:
        """Run one storage write, retrying with backoff until it lands or the claim is over."""
        attempt = 0
        while True:
            try:
                await write()
            except Exception as error:
                self._stopping()
                if not self._policy.keep_settling(batch, self._stop_requested_at):
                    logger.error("Giving up to %s outbox messages after %d attempts: %s", what, attempt + 1, error)
                    return
                if attempt == 0:
                    logger.warning("Could not %s outbox messages; retrying until the storage takes it: %s", what, error)
                await asyncio.sleep(self._policy.settle_delay(attempt))
                attempt += 1
                continue
            if attempt:
                logger.info("Outbox storage took the %s after %d retries", what, attempt)
            return

    async def _refuse(self, message: OutboxMessage, error: BaseException) -> None:
        """Spend one retry (with backoff) or abandon."""
        storage = self._storage
        exhausted = self._policy.exhausted(message)
        self._policy.refused(abandoned=exhausted)
        if exhausted:
            self._policy.poison.forget(message.id)
            logger.error("Abandoning outbox message %s after %d attempts", message.id, message.retry_count + 1)
            if isinstance(storage, IAsyncOutboxRetryScheduling):
                await storage.abandon(message.id, _reason(error))
            else:
                await storage.mark_abandoned(message.id)
        elif isinstance(storage, IAsyncOutboxRetryScheduling):
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
        storage: IOutboxStorage | None,
        transport: IEventTransport,
        config: OutboxConfig,
        metrics: IOutboxMetrics | None = None,
    ) -> None:
        """Initialize with storage, transport, config and optional metrics.

        Raises:
            OutboxStorageFlavourMissingError: No synchronous storage is registered.
        """
        if storage is None:
            raise _missing_storage(RelayMode.SYNC, "IOutboxStorage", "async")
        self._storage = storage
        self._transport = transport
        self._config = config
        self._policy = _RelayPolicy(config, metrics)
        self._stop_event = threading.Event()
        self._stop_requested_at: float | None = None

    @property
    def seconds_since_last_cycle(self) -> float | None:
        """Seconds since the relay last finished a claim cycle; None before the first."""
        last = self._policy.last_cycle
        return None if last is None else time.monotonic() - last

    @override
    def initialize(self) -> None:
        """Nothing to prepare: storages and transports own their connections."""
        self._stop_requested_at = None

    @override
    def dispose(self) -> None:
        """Release the storage's wake-up resources; `run` left no claim behind."""
        if isinstance(self._storage, IOutboxWakeUp):
            self._storage.close_wake_up()

    @override
    def run(self) -> None:
        """Relay until stopped; storage errors are logged and retried, never fatal."""
        logger.info("Outbox relay started (%s, sync)", type(self._storage).__name__)
        while not self._stopping():
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

    def _stopping(self) -> bool:
        if self._stop_event.is_set():
            if self._stop_requested_at is None:
                self._stop_requested_at = time.monotonic()
            return True
        return False

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
        batch = _Batch(messages, self._config.claim_timeout_seconds)
        keeper = self._keep_claims(batch)
        try:
            self._send_all(batch)
            self._flush(batch)
            for message in batch.judge_suspects(self._policy.poison):
                self._send_alone(batch, message)
        finally:
            if keeper is not None:
                keeper.set()
        self._settle(batch)
        return _BatchOutcome(claimed=len(messages), outage=batch.outage is not None)

    def _send_all(self, batch: _Batch) -> None:
        for message in batch.messages:
            if batch.stopped_sending(self._stopping()) or batch.blocked(message):
                batch.release.append(message)
                continue
            try:
                self._send(message)
            except EventDeliveryRejectedError as error:
                batch.on_refused(message, error)
            except Exception as error:
                batch.on_failed(message, error, self._policy.poison.known(message))
            else:
                batch.on_sent(message)

    def _send(self, message: OutboxMessage) -> None:
        self._transport.send(
            message.event_name, message.payload, message.headers, message.partition_key
        )

    def _flush(self, batch: _Batch) -> None:
        """Flush once; on a refused flush confirm one by one."""
        if not batch.sent:
            return
        try:
            self._transport.flush()
        except EventDeliveryRejectedError:
            logger.warning("Flush refused part of a batch of %d; confirming one by one", len(batch.sent))
            self._confirm_one_by_one(batch)
        except Exception as error:
            batch.on_flush_failed(error)
        else:
            batch.delivered.extend(batch.sent)

    def _confirm_one_by_one(self, batch: _Batch) -> None:
        """Replay a refused flush a message at a time so the refusal lands on its owner."""
        sent, batch.sent = batch.sent, []
        for index, message in enumerate(sent):
            if batch.blocked(message):
                batch.release.append(message)
                continue
            try:
                self._send(message)
                self._transport.flush()
            except EventDeliveryRejectedError as error:
                batch.on_refused(message, error)
                continue
            except Exception as error:
                logger.error("Transport failed while confirming; releasing the rest: %s", error)
                batch.outage = error
                batch.release.extend(sent[index:])
                return
            batch.delivered.append(message)

    def _send_alone(self, batch: _Batch, message: OutboxMessage) -> None:
        """Retry a suspect alone: delivered, or refused with its own error."""
        try:
            self._send(message)
            self._transport.flush()
        except Exception as error:
            logger.error("Outbox message %s failed again alone; counting it as refused", message.id)
            self._policy.poison.remember(message.id)
            batch.refused.append((message, error))
            return
        batch.delivered.append(message)

    def _keep_claims(self, batch: _Batch) -> threading.Event | None:
        storage = self._storage
        if not isinstance(storage, IOutboxLiveness):
            return None
        done = threading.Event()

        def renew() -> None:
            interval = self._policy.renew_interval()
            while not done.wait(interval):
                held = batch.holding()
                try:
                    kept = storage.renew_claims(held)
                except Exception as error:
                    logger.warning("Could not renew %d outbox claims: %s", len(held), error)
                    continue
                if kept < len(held):
                    logger.warning(
                        "Lost %d of %d outbox claims to another relay; sending nothing more of this batch",
                        len(held) - kept, len(held),
                    )
                    batch.lost = True
                    return

        threading.Thread(target=renew, name="outbox-claim-renewal", daemon=True).start()
        return done

    def _settle(self, batch: _Batch) -> None:
        """Acknowledge what was delivered, then record refusals, then release the rest."""
        storage = self._storage
        if batch.delivered:
            ids = [m.id for m in batch.delivered]
            self._persist(batch, "acknowledge", lambda: self._acknowledge(ids))
            self._policy.relayed(len(ids))
            for message_id in ids:
                self._policy.poison.forget(message_id)
        for message, error in batch.refused:
            self._persist(batch, "refuse", lambda m=message, e=error: self._refuse(m, e))
        if batch.release and isinstance(storage, IOutboxRetryScheduling):
            ids = [m.id for m in batch.release]
            self._persist(batch, "release", lambda: storage.release(ids))

    def _persist(self, batch: _Batch, what: str, write: Callable[[], None]) -> None:
        """Run one storage write, retrying with backoff until it lands or the claim is over."""
        attempt = 0
        while True:
            try:
                write()
            except Exception as error:
                self._stopping()
                if not self._policy.keep_settling(batch, self._stop_requested_at):
                    logger.error("Giving up to %s outbox messages after %d attempts: %s", what, attempt + 1, error)
                    return
                if attempt == 0:
                    logger.warning("Could not %s outbox messages; retrying until the storage takes it: %s", what, error)
                time.sleep(self._policy.settle_delay(attempt))
                attempt += 1
                continue
            if attempt:
                logger.info("Outbox storage took the %s after %d retries", what, attempt)
            return

    def _refuse(self, message: OutboxMessage, error: BaseException) -> None:
        """Spend one retry (with backoff) or abandon."""
        storage = self._storage
        exhausted = self._policy.exhausted(message)
        self._policy.refused(abandoned=exhausted)
        if exhausted:
            self._policy.poison.forget(message.id)
            logger.error("Abandoning outbox message %s after %d attempts", message.id, message.retry_count + 1)
            if isinstance(storage, IOutboxRetryScheduling):
                storage.abandon(message.id, _reason(error))
            else:
                storage.mark_abandoned(message.id)
        elif isinstance(storage, IOutboxRetryScheduling):
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
