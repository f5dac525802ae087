"""What the relay decides without I/O, shared by the sync and async relays.

Each claimed message has one state in its `ClaimedBatch` (claimed, sent,
delivered, suspect, refused or released), moved by what the transport did;
`RelayPolicy` turns settings and outcomes into pauses, retries and give-ups.
The relay services only do the I/O around these decisions.
"""

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from uuid import UUID

from spakky.event.error import EventDeliveryRejectedError, EventTransportNotRunningError
from spakky.outbox.common.config import OutboxConfig, RelayMode
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.error import (
    OutboxDeliveryRefusedError,
    OutboxStorageFlavourMissingError,
)
from spakky.outbox.ports.metrics import IOutboxMetrics
from spakky.outbox.relay.backoff import backoff_delay

logger = logging.getLogger("spakky.outbox.relay.relay")
"""The relays' logger (one name for both flavours, as before the split)."""

SYNC_WAIT_SLICE_SECONDS = 0.25
"""Longest blocking wake-up wait of the sync relay, so a stop is seen promptly."""
HOUSEKEEPING_INTERVAL_SECONDS = 15.0
"""How often the relay reports the backlog and applies retention."""
PURGE_BATCH = 10_000
"""Rows one retention purge deletes per round trip."""
OUTAGE_STREAK = 3
"""Plain send failures in a row that make a batch an outage rather than poison."""
OUTAGE_BACKOFF_BASE_SECONDS = 0.1
"""First pause after an outage: a one-second database restart costs about two."""
SETTLE_BACKOFF_BASE_SECONDS = 0.05
"""First pause before retrying an acknowledgement the storage failed to take."""
SETTLE_BACKOFF_MAX_SECONDS = 1.0
"""Longest pause between acknowledgement retries, so recovery is seen within a second."""
STOP_GRACE_SECONDS = 5.0
"""How long a stopping relay keeps trying to settle what it sent."""
CONTENDED_BACKOFF_BASE_SECONDS = 0.05
"""First pause after an empty claim that followed work: other relays may have
taken the rows this one chose, and the backlog may not be drained."""


def reason(error: BaseException) -> str:
    """Render a delivery error as the text kept with the message."""
    if isinstance(error, EventDeliveryRejectedError) and error.reasons:
        return f"{type(error).__name__}: {'; '.join(error.reasons)}"
    return f"{type(error).__name__}: {error}"


def missing_storage(mode: RelayMode) -> OutboxStorageFlavourMissingError:
    """The error of a relay whose flavour of storage is not registered."""
    wanted, other = (
        ("IAsyncOutboxStorage", "sync") if mode is RelayMode.ASYNC else ("IOutboxStorage", "async")
    )
    return OutboxStorageFlavourMissingError(
        f"SPAKKY_OUTBOX__RELAY={mode} needs an {wanted} Pod and none is registered. "
        f"Register one, or set SPAKKY_OUTBOX__RELAY to the flavour of the storage you "
        f"have ({other}), or to off"
    )


class BatchOutcome:
    """What happened to one claimed batch; decides how long the relay rests."""

    claimed: int
    outage: bool

    def __init__(self, claimed: int = 0, outage: bool = False) -> None:
        self.claimed = claimed
        self.outage = outage


class PoisonMemory:
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
        """Whether ``message`` failed on its own before."""
        if message.id in self._ids:
            return True
        error = message.last_error
        return message.retry_count > 0 and error is not None and not error.startswith(self._REFUSAL)

    def remember(self, message_id: UUID) -> None:
        """Note that the message failed alone."""
        self._ids[message_id] = None
        if len(self._ids) > self._LIMIT:
            del self._ids[next(iter(self._ids))]

    def forget(self, message_id: UUID) -> None:
        """Drop the message (delivered or abandoned)."""
        self._ids.pop(message_id, None)


class MessageState(StrEnum):
    """Where one claimed message stands in its batch."""

    CLAIMED = "claimed"
    """Not sent yet."""
    SENT = "sent"
    """Handed to the transport, not confirmed by a flush."""
    DELIVERED = "delivered"
    """Confirmed by a flush: to be acknowledged."""
    SUSPECT = "suspect"
    """Failed with a plain error: the batch shows whose fault it is."""
    REFUSED = "refused"
    """Refused (or failed alone): spends one retry or is abandoned."""
    RELEASED = "released"
    """Not sent, or sent unconfirmed: given back untouched."""


@dataclass
class _Tracked:
    """One message of a batch: its state, the error that put it there, and when it moved."""

    message: OutboxMessage
    state: MessageState = MessageState.CLAIMED
    error: BaseException | None = None
    moved: int = 0


class ClaimedBatch:
    """One claimed batch as the relay works through it: every message's state in one place.

    Sending only moves messages between states; every storage write
    (acknowledge, refuse, release) happens afterwards, in the order the
    messages reached their state, so claims are never renewed and settled at
    the same time.
    """

    def __init__(self, messages: list[OutboxMessage], claim_timeout: float) -> None:
        self.messages = messages
        self.claimed_at = time.monotonic()
        self.claim_deadline = self.claimed_at + claim_timeout
        self._tracked = {m.id: _Tracked(m) for m in messages}
        self._moves = 0
        self.halted: set[str] = set()
        self.outage: BaseException | None = None
        self.lost = False
        self._streak = 0

    def _move(self, message: OutboxMessage, state: MessageState, error: BaseException | None = None) -> None:
        tracked = self._tracked[message.id]
        self._moves += 1
        tracked.state, tracked.error, tracked.moved = state, error, self._moves

    def _in(self, state: MessageState) -> list[_Tracked]:
        """Messages in ``state``, in the order they reached it."""
        return sorted((t for t in self._tracked.values() if t.state is state), key=lambda t: t.moved)

    def in_state(self, state: MessageState) -> list[OutboxMessage]:
        """Messages in ``state``, in the order they reached it."""
        return [t.message for t in self._in(state)]

    def refusals(self) -> list[tuple[OutboxMessage, BaseException]]:
        """Refused messages with their errors, in the order they were refused."""
        return [(t.message, t.error) for t in self._in(MessageState.REFUSED) if t.error is not None]

    def sendable(self, message: OutboxMessage, stopping: bool) -> bool:
        """Whether to send ``message`` now; if not (stop, outage, lost claims, key held), release it."""
        if stopping or self.outage is not None or self.lost or self.blocked(message):
            self._move(message, MessageState.RELEASED)
            return False
        return True

    def blocked(self, message: OutboxMessage) -> bool:
        """Whether an earlier message of this key failed, so this one must wait."""
        return message.partition_key is not None and message.partition_key in self.halted

    def _halt(self, message: OutboxMessage) -> None:
        if message.partition_key is not None:
            self.halted.add(message.partition_key)

    def on_sent(self, message: OutboxMessage) -> None:
        """The transport took ``message`` (unconfirmed until the flush)."""
        self._move(message, MessageState.SENT)
        self._streak = 0

    def on_refused(self, message: OutboxMessage, error: BaseException) -> None:
        """The transport refused ``message``: it spends budget and holds back its key."""
        logger.warning("Transport refused outbox message %s: %s", message.id, error)
        self._move(message, MessageState.REFUSED, error)
        self._halt(message)
        self._streak = 0

    def on_failed(self, message: OutboxMessage, error: Exception, known_poison: bool) -> None:
        """Sending failed: a refusal is the message's; a plain error makes it suspect.

        A suspect stays one until the batch shows whose fault it is; a closed
        transport, or `OUTAGE_STREAK` plain failures in a row, is an outage.
        """
        if isinstance(error, EventDeliveryRejectedError):
            self.on_refused(message, error)
            return
        self._halt(message)
        if isinstance(error, EventTransportNotRunningError):
            self.outage = error
            self._move(message, MessageState.RELEASED)
            return
        self._move(message, MessageState.SUSPECT, error)
        if known_poison:
            return
        self._streak += 1
        if self._streak >= OUTAGE_STREAK:
            self.outage = error

    def on_flushed(self) -> None:
        """The flush confirmed everything sent."""
        for message in self.in_state(MessageState.SENT):
            self._move(message, MessageState.DELIVERED)

    def on_flush_error(self, error: Exception) -> list[OutboxMessage]:
        """The flush failed: return the sent messages to confirm one by one, if any.

        A refused flush refused part of the batch: when the transport names the
        refused messages (`OutboxDeliveryRefusedError`, the outbox's own
        adapters), those are refused and the others delivered; otherwise each
        sent message is replayed alone, so the refusal lands on its owner. Any other error is the
        transport failing as a whole: nothing sent was confirmed, all is released.
        """
        sent = self.in_state(MessageState.SENT)
        if isinstance(error, OutboxDeliveryRefusedError) and all(0 <= p < len(sent) for p in error.refused):
            # The transport says which: refuse those, the rest was confirmed (nothing replayed).
            logger.warning("Flush refused %d of a batch of %d", len(error.refused), len(sent))
            for position, message in enumerate(sent):
                refusal = error.refused.get(position)
                if refusal is None:
                    self._move(message, MessageState.DELIVERED)
                else:
                    self.on_refused(message, EventDeliveryRejectedError([refusal]))
            return []
        if isinstance(error, EventDeliveryRejectedError):
            logger.warning("Flush refused part of a batch of %d; confirming one by one", len(sent))
            return sent
        logger.error("Flush failed; releasing %d messages: %s", len(sent), error)
        self.outage = error
        for message in sent:
            self._move(message, MessageState.RELEASED)
        return []

    def confirming(self, message: OutboxMessage) -> bool:
        """Whether to replay ``message`` alone now; if its key is held back, release it."""
        if self.blocked(message):
            self._move(message, MessageState.RELEASED)
            return False
        return True

    def on_confirmed(self, message: OutboxMessage) -> None:
        """``message`` went through alone (replayed, or a suspect retried)."""
        self._move(message, MessageState.DELIVERED)

    def on_confirm_failed(self, message: OutboxMessage, error: Exception) -> bool:
        """Replaying ``message`` alone failed; False ends the replay.

        A refusal is the message's own; anything else is an outage, and the
        message and the rest still unconfirmed are released.
        """
        if isinstance(error, EventDeliveryRejectedError):
            self.on_refused(message, error)
            return True
        logger.error("Transport failed while confirming; releasing the rest: %s", error)
        self.outage = error
        for unconfirmed in self.in_state(MessageState.SENT):
            self._move(unconfirmed, MessageState.RELEASED)
        return False

    def judge_suspects(self, poison: PoisonMemory) -> list[OutboxMessage]:
        """Decide the suspects' fate; return those to retry alone.

        Something of the batch got through: the failures were the messages'
        own, and each gets one more try alone. Nothing got through: if only
        messages already known as poison failed, they count as refused again;
        any other failure means the transport is down, and every suspect goes
        back untouched with nobody's budget spent.
        """
        suspects = self._in(MessageState.SUSPECT)
        if not suspects:
            return []
        if self.outage is None and self.in_state(MessageState.DELIVERED):
            for tracked in suspects:
                logger.warning(
                    "Outbox message %s failed while others went through; retrying it alone: %s",
                    tracked.message.id, tracked.error,
                )
            return [t.message for t in suspects]
        if self.outage is None and all(poison.known(t.message) for t in suspects):
            for tracked in suspects:
                self._move(tracked.message, MessageState.REFUSED, tracked.error)
            return []
        self.outage = self.outage or suspects[-1].error
        logger.error("Transport unavailable; releasing the batch untouched: %s", self.outage)
        for tracked in suspects:
            self._move(tracked.message, MessageState.RELEASED)
        return []

    def on_failed_alone(self, message: OutboxMessage, error: Exception, poison: PoisonMemory) -> None:
        """A suspect failed again alone: it is poison, refused with its own error."""
        logger.error("Outbox message %s failed again alone; counting it as refused", message.id)
        poison.remember(message.id)
        self._move(message, MessageState.REFUSED, error)

    def holding(self) -> list[UUID]:
        """Ids this relay still holds (everything claimed, until settling starts)."""
        return [m.id for m in self.messages]

    def claims_kept(self, kept: int, held: int) -> bool:
        """Record a renewal's answer; False (stop renewing) once claims were lost."""
        if kept >= held:
            return True
        logger.warning(
            "Lost %d of %d outbox claims to another relay; sending nothing more of this batch",
            held - kept, held,
        )
        self.lost = True
        return False


class RelayPolicy:
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
        self.poison = PoisonMemory()
        self.stop_requested_at: float | None = None
        """``time.monotonic()`` when the relay first saw its stop event set."""

    def started(self) -> None:
        """A (re)started relay has no stop pending."""
        self.stop_requested_at = None

    def stopping(self, stop_set: bool) -> bool:
        """Whether the relay is stopping (its stop event is set); notes when it first was."""
        if stop_set and self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
        return stop_set

    def seconds_since_last_cycle(self) -> float | None:
        """Seconds since the relay last finished a claim cycle; None before the first."""
        return None if self.last_cycle is None else time.monotonic() - self.last_cycle

    def cycle_done(self, outcome: BatchOutcome) -> float:
        """Record that a claim cycle finished (relay liveness for health checks).

        Returns:
            The pause before the next claim (`idle_delay`).
        """
        self.last_cycle = time.monotonic()
        return self.idle_delay(outcome)

    def housekeeping_due(self) -> bool:
        """Whether to report the backlog / apply retention now (at most every 15 s)."""
        now = time.monotonic()
        if not self.wants_housekeeping() or now < self._next_housekeeping:
            return False
        self._next_housekeeping = now + HOUSEKEEPING_INTERVAL_SECONDS
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

    def relayed(self, ids: list[UUID]) -> None:
        """Count acknowledged messages and forget them as poison."""
        if self.metrics is not None and ids:
            self.metrics.record_relayed(len(ids))
        for message_id in ids:
            self.poison.forget(message_id)

    def refused(self, message: OutboxMessage) -> bool:
        """Count a refusal; True when it spends the message's last retry (abandon it)."""
        exhausted = message.retry_count + 1 >= self.config.max_retry_count
        if self.metrics is not None:
            self.metrics.record_failed(1)
            if exhausted:
                self.metrics.record_abandoned(1)
        if exhausted:
            self.poison.forget(message.id)
            logger.error("Abandoning outbox message %s after %d attempts", message.id, message.retry_count + 1)
        return exhausted

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

    def settle_failed(self, batch: ClaimedBatch, what: str, attempt: int, error: Exception) -> float | None:
        """A storage write of ``batch`` failed: the pause before retrying, or None to give up.

        Retried until the claim is provably over (the claim timeout passed
        since the claim: another relay may own the message) or a stop's grace
        ran out.
        """
        now = time.monotonic()
        stop = self.stop_requested_at
        if now >= batch.claim_deadline or (stop is not None and now - stop >= STOP_GRACE_SECONDS):
            logger.error("Giving up to %s outbox messages after %d attempts: %s", what, attempt + 1, error)
            return None
        if attempt == 0:
            logger.warning("Could not %s outbox messages; retrying until the storage takes it: %s", what, error)
        return backoff_delay(attempt, SETTLE_BACKOFF_BASE_SECONDS, SETTLE_BACKOFF_MAX_SECONDS)

    def settled(self, what: str, attempt: int) -> None:
        """A storage write landed (after ``attempt`` retries)."""
        if attempt:
            logger.info("Outbox storage took the %s after %d retries", what, attempt)

    def outage_delay(self) -> float:
        """Pause after a storage or transport outage; grows while it lasts."""
        self.outage_streak += 1
        # A polling interval of 0 asks for no idle pause, not for a busy loop against an outage.
        base = min(self.config.polling_interval_seconds, OUTAGE_BACKOFF_BASE_SECONDS) or OUTAGE_BACKOFF_BASE_SECONDS
        return backoff_delay(self.outage_streak - 1, base, self.config.outage_backoff_max_seconds)

    def idle_delay(self, outcome: BatchOutcome) -> float:
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
        delay = CONTENDED_BACKOFF_BASE_SECONDS * 2**self.empty_since_work
        if delay >= polling:
            self.empty_since_work = None
            return polling
        self.empty_since_work += 1
        return delay
