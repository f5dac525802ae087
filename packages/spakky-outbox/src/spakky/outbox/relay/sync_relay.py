# Sync twin generated from packages/spakky-outbox/src/spakky/outbox/relay/async_relay.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): 3460f44020430749d1f1bb55b4081f89b731008c9eb47190d3fe887d7c90ff28
"""The sync outbox relay: claims stored messages and relays them to the sync transport.

It only does the I/O: what a message's outcome means is decided in
`spakky.outbox.relay.state`, and the waiting that differs between the
flavours lives in `spakky.outbox.relay.primitives`.
"""

import time
from collections.abc import Callable, Sequence
from typing import override
from uuid import UUID

from spakky.core.pod.annotations.pod import Pod
from spakky.core.service.background import AbstractBackgroundService
from spakky.event.event_publisher import IEventTransport
from spakky.outbox.common.config import OutboxConfig, RelayMode
from spakky.outbox.common.message import MESSAGE_ID_HEADER, OutboxMessage
from spakky.outbox.delivery.batch import batches_in_flight
from spakky.outbox.ports.metrics import IOutboxMetrics
from spakky.outbox.ports.storage import (
    IOutboxAdministration,
    IOutboxBatchAcknowledgement,
    IOutboxLiveness,
    IOutboxRelayFigures,
    IOutboxRetryScheduling,
    IOutboxStorage,
    IOutboxWakeUp,
)
from spakky.outbox.ports.tracing import IOutboxTracer
from spakky.outbox.relay.backlog import BacklogReader
from spakky.outbox.relay.figures import FiguresRecorder
from spakky.outbox.relay.primitives import (
    Event,
    Lock,
    Repeater,
    rest,
    run_lanes,
    sleep,
)
from spakky.outbox.relay.state import (
    PURGE_BATCH,
    BatchOutcome,
    ClaimedBatch,
    MessageState,
    RelayPolicy,
    logger,
    missing_storage,
    reason,
)
from spakky.outbox.relay.telemetry import RelayTelemetry


@Pod()
class OutboxRelayBackgroundService(AbstractBackgroundService):
    """Claims stored messages and relays them to the sync transport."""

    _storage: IOutboxStorage
    _transport: IEventTransport
    _config: OutboxConfig

    def __init__(
        self,
        storage: IOutboxStorage | None,
        transport: IEventTransport,
        config: OutboxConfig,
        metrics: IOutboxMetrics | None = None,
        tracer: IOutboxTracer | None = None,
    ) -> None:
        """Initialize with sync storage, transport, config, and optional metrics and tracer.

        Raises:
            OutboxStorageFlavourMissingError: No synchronous storage is registered.
        """
        if storage is None:
            raise missing_storage(RelayMode.SYNC)
        self._storage = storage
        self._transport = transport
        self._config = config
        # Where the storage keeps the relays' figures, they are counted in front of the metrics.
        self._figures = (
            FiguresRecorder(metrics)
            if config.figures_interval_seconds > 0 and isinstance(storage, IOutboxRelayFigures)
            else None
        )
        metrics = metrics if self._figures is None else self._figures
        self._policy = RelayPolicy(config, metrics)
        self._telemetry = RelayTelemetry(metrics, tracer)
        self._stop_event = Event()
        self._writes = Lock()

    @property
    def seconds_since_last_cycle(self) -> float | None:
        """Seconds since the relay last finished a claim cycle; None before the first."""
        return self._policy.seconds_since_last_cycle()

    @override
    def initialize(self) -> None:
        """Hand the metrics a backlog reader; storages and transports own their connections."""
        self._policy.started()
        metrics, storage = self._policy.metrics, self._storage
        if metrics is not None and isinstance(storage, IOutboxAdministration):
            # Read when the gauges are observed, not on a timer of the relay.
            metrics.watch_backlog(BacklogReader(storage))

    @override
    def dispose(self) -> None:
        """Release the storage's wake-up resources; `run` left no claim behind."""
        if isinstance(self._storage, IOutboxWakeUp):
            self._storage.close_wake_up()

    @override
    def run(self) -> None:
        """Relay until stopped, in lanes (`run_lanes`); storage errors are logged and retried, never fatal."""
        logger.info(
            "Outbox relay started (%s, batch %d)", type(self._storage).__name__, self._config.batch_size
        )
        # With several lanes, one batch's wait for the broker and the storage overlaps
        # the next one's claim and send; claims hold their keys, so lanes never share one.
        writer = self._figures_writer()
        try:
            run_lanes(batches_in_flight(self._config.batches_in_flight, self._transport), self._relay_lane)
        finally:
            if writer is not None:
                writer.stop()
        logger.info("Outbox relay stopped")

    def _figures_writer(self) -> Repeater | None:
        """Every ``FIGURES_INTERVAL_SECONDS``, beside the lanes, write the window just ended; a failure drops it."""
        figures, storage = self._figures, self._storage
        if figures is None or not isinstance(storage, IOutboxRelayFigures):
            return None
        figures.begin()

        def write() -> bool:
            window = figures.window(self._policy.name)
            if window is not None:
                try:
                    storage.write_relay_figures(window)
                except Exception as error:
                    logger.warning("Outbox relay figures not written, window dropped: %s", reason(error))
            return True

        return Repeater(write, self._config.figures_interval_seconds, "outbox-relay-figures")

    def _relay_lane(self) -> None:
        """Claim, send, flush and settle batches one after another until stopped."""
        while not self._stopping():
            try:
                outcome = self.relay_batch()
                if self._policy.housekeeping_due():
                    self.housekeeping()
            except Exception:
                logger.exception("Outbox storage failed; the relay backs off and retries")
                outcome = BatchOutcome(outage=True)
            delay = self._policy.cycle_done(outcome)
            if delay > 0 and not self._stopping():
                self._rest(delay, wake_on_commit=not outcome.outage)

    def _stopping(self) -> bool:
        return self._policy.stopping(self._stop_event.is_set())

    def housekeeping(self) -> None:
        """Purge published messages past retention (the backlog is read by the metrics' gauges)."""
        storage = self._storage
        if not isinstance(storage, IOutboxAdministration):
            return
        age = self._policy.retention_age()
        while age is not None and storage.purge_published(age, PURGE_BATCH) >= PURGE_BATCH:
            logger.info("Outbox retention purged %d published messages; continuing", PURGE_BATCH)

    def relay_batch(self) -> BatchOutcome:
        """Claim one batch, send it, flush once, and settle every message."""
        storage = self._storage
        claimed_at = time.monotonic()
        messages = storage.fetch_pending(
            self._config.batch_size,
            self._policy.claim_max_retry(isinstance(storage, IOutboxRetryScheduling)),
        )
        if not messages:
            return BatchOutcome()
        self._telemetry.claimed(len(messages))
        batch = self._policy.new_batch(messages, claimed_at, liveness=isinstance(storage, IOutboxLiveness))
        keeper = self._keep_claims(batch)
        try:
            self._send_all(batch)
            self._flush(batch)
            for message in batch.judge_suspects(self._policy.poison):
                self._send_alone(batch, message)
            # Claims stay renewed while they are settled: an acknowledgement
            # retried through a storage cut must not lose them to another relay.
            self._settle(batch)
        finally:
            if keeper is not None:
                keeper.stop()
        return BatchOutcome(claimed=len(messages), outage=batch.outage is not None)

    def _send_all(self, batch: ClaimedBatch) -> None:
        for message in batch.messages:
            # `_stopping` only when the event is set: it notes when the stop was first seen.
            if not batch.sendable(message, self._stop_event.is_set() and self._stopping()):
                continue
            if self._policy.spent(message):
                self._abandon_now(batch, message, self._policy.spent_reason(message), refused=False)
                continue
            try:
                self._send(message)
            except Exception as error:
                batch.on_failed(message, error, self._policy.poison.known(message, error))
                self._abandon_if_exhausted(batch, message)
            else:
                batch.on_sent(message)

    def _send(self, message: OutboxMessage) -> None:
        # The message id rides along so a consumer's inbox can tell a resend
        # (after a relay crash) from a new message; the stored headers stay as saved.
        headers = {**message.headers, MESSAGE_ID_HEADER: str(message.id)}
        figures = self._telemetry.waits_only
        if figures is not None:
            # Only the figures observe it: the wait as the send starts, counted if it went through.
            waited = time.time() - message.created_at.timestamp()
            self._transport.send(message.event_name, message.payload, headers, message.partition_key)
            figures.record_commit_to_send(max(0.0, waited))
            return
        with self._telemetry.sending(message):
            self._transport.send(message.event_name, message.payload, headers, message.partition_key)

    def _send_flushed(self, message: OutboxMessage) -> None:
        self._send(message)
        self._transport_flush()

    def _transport_flush(self) -> None:
        with self._telemetry.flushing():
            self._transport.flush()

    def _flush(self, batch: ClaimedBatch) -> None:
        """Flush once; on a refused flush confirm one by one."""
        if not batch.flushable():
            return
        try:
            self._transport_flush()
        except Exception as error:
            self._confirm_one_by_one(batch, batch.on_flush_error(error))
        else:
            batch.on_flushed()

    def _confirm_one_by_one(self, batch: ClaimedBatch, sent: list[OutboxMessage]) -> None:
        """Replay a refused flush a message at a time so the refusal lands on its owner."""
        for message in sent:
            if not batch.confirming(message):
                continue
            try:
                self._send_flushed(message)
            except Exception as error:
                if not batch.on_confirm_failed(message, error):
                    return
                self._abandon_if_exhausted(batch, message)
            else:
                batch.on_confirmed(message)

    def _send_alone(self, batch: ClaimedBatch, message: OutboxMessage) -> None:
        """Retry a suspect alone: delivered, or refused with its own error."""
        if not batch.retrying_alone(message):
            return
        try:
            self._send_flushed(message)
        except Exception as error:
            batch.on_failed_alone(message, error, self._policy.poison)
        else:
            batch.on_confirmed(message)

    def _abandon_if_exhausted(self, batch: ClaimedBatch, message: OutboxMessage) -> None:
        """A refusal that spends the last retry abandons at once, so the key goes on in this batch (as 8.5)."""
        error = batch.refused_error(message)
        if error is not None and self._policy.exhausts(message):
            self._abandon_now(batch, message, reason(error), refused=True)

    def _abandon_now(self, batch: ClaimedBatch, message: OutboxMessage, why: str, *, refused: bool) -> None:
        """Abandon ``message`` before anything else of its key is sent; if that fails, the key waits."""
        if self._persist(
            batch, "abandon", [message.id], lambda attempt: self._abandon(message, why, attempt)
        ) is not None:
            if refused:
                self._policy.refusal_recorded(message, abandoned=True)
            else:
                self._policy.spent_abandoned(message)
            batch.on_abandoned(message)
        else:
            batch.on_abandon_failed(message)

    def _keep_claims(self, batch: ClaimedBatch) -> Repeater | None:
        """On a storage with liveness, renew the batch's unsettled claims until it is settled."""
        storage = self._storage
        if not isinstance(storage, IOutboxLiveness):
            return None

        def renew() -> bool:
            with self._writes:
                held = batch.holding()
                if not held:
                    return True
                started = time.monotonic()
                try:
                    kept = storage.renew_claims(held)
                except Exception as error:
                    batch.on_renewal_failed(len(held), error)
                else:
                    batch.on_renewed(kept, len(held), started)
            return True

        return Repeater(renew, self._policy.renew_interval(), "outbox-claim-renewal")

    def _settle(self, batch: ClaimedBatch) -> None:
        """Acknowledge what was delivered, then record refusals, then release the rest."""
        storage = self._storage
        delivered = [m.id for m in batch.in_state(MessageState.DELIVERED)]
        if delivered:
            acknowledged = self._persist(
                batch, "acknowledge", delivered, lambda _: self._acknowledge(delivered), one_message=False
            )
            if acknowledged is not None:
                self._policy.relayed(delivered, acknowledged)
        for message, error in batch.refusals():
            if self._policy.exhausts(message):
                self._abandon_now(batch, message, reason(error), refused=True)
            elif self._persist(
                batch, "refuse", [message.id], lambda attempt, m=message, e=error: self._retry_later(m, e, attempt)
            ) is not None:
                self._policy.refusal_recorded(message, abandoned=False)
        released = [m.id for m in batch.in_state(MessageState.RELEASED)]
        if released and isinstance(storage, IOutboxRetryScheduling):
            self._persist(batch, "release", released, lambda _: storage.release(released))

    def _persist(
        self,
        batch: ClaimedBatch,
        what: str,
        ids: list[UUID],
        write: Callable[[int], int | None],
        *,
        one_message: bool = True,
    ) -> int | None:
        """Run one storage write (given its attempt number), retrying with backoff.

        Writes wait for a claim renewal in progress, so the renewal never
        counts as lost what a write just settled.

        Returns:
            None when the write did not land; else how many of ``ids`` it
            settled (fewer: fenced off), ``len(ids)`` when the storage cannot tell.
        """
        attempt = 0
        try:
            while True:
                try:
                    with self._writes:
                        count = write(attempt)
                except Exception as error:
                    self._stopping()
                    delay = self._policy.settle_failed(batch, what, attempt, error, one_message=one_message)
                    if delay is None:
                        return None
                    sleep(delay)
                    attempt += 1
                else:
                    return self._policy.settled(what, attempt, len(ids), count)
        finally:
            batch.settled(ids)

    def _abandon(self, message: OutboxMessage, why: str, attempt: int) -> None:
        """Abandon ``message`` with its reason where the storage keeps one."""
        storage = self._storage
        if isinstance(storage, IOutboxRetryScheduling):
            storage.abandon(message.id, self._policy.attempt_reason(why, attempt))
        else:
            storage.mark_abandoned(message.id)

    def _retry_later(self, message: OutboxMessage, error: BaseException, attempt: int) -> None:
        """Spend one retry: with backoff and the reason where the storage can, else as 6.x did."""
        storage = self._storage
        if isinstance(storage, IOutboxRetryScheduling):
            storage.schedule_retry(
                message.id, self._policy.retry_delay(message), self._policy.attempt_reason(reason(error), attempt)
            )
        else:
            storage.increment_retry(message.id)

    def _acknowledge(self, ids: Sequence[UUID]) -> int | None:
        """Mark ``ids`` published; how many the storage marked (None: it cannot tell)."""
        storage = self._storage
        if isinstance(storage, IOutboxBatchAcknowledgement):
            return storage.mark_published_many(ids)
        for message_id in ids:
            storage.mark_published(message_id)
        return None

    def _rest(self, delay: float, *, wake_on_commit: bool) -> None:
        """Sleep up to ``delay``; a stop, or a commit when the storage can tell, wakes early."""
        storage = self._storage
        wake = storage.wait_for_messages if wake_on_commit and isinstance(storage, IOutboxWakeUp) else None
        rest(self._stop_event, delay, wake)
