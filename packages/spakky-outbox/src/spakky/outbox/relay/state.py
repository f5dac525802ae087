"""What the relay decides without I/O, shared by the sync and async relays.

Each claimed message has one state in its `ClaimedBatch` (claimed, sent,
delivered, suspect, refused or released), moved by what the transport did;
`RelayPolicy` turns settings and outcomes into pauses, retries and give-ups.
The relay services only do the I/O around these decisions.
"""

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from uuid import UUID

from spakky.event.error import EventDeliveryRejectedError, EventTransportNotRunningError
from spakky.outbox.common.config import OutboxConfig, RelayMode
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.reasons import ascii_reason, storable_reason
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
LEASE_MARGIN = 0.1
"""Part of a claim's lease a relay keeps in hand: it starts no send or flush in the last tenth."""
MESSAGE_SETTLE_ATTEMPTS = 4
"""Attempts at one message's refusal or abandonment before the relay goes on without it
(the last one with its reason in ASCII): a write failing for that message alone must not
hold up the relay; the message comes back when its claim ends, its budget unspent."""
NO_RETRY_LIMIT = 2**31 - 1
"""The ``max_retry`` a relay claims with when it abandons spent messages itself, so a
lowered ``MAX_RETRY_COUNT`` never leaves them unclaimed and unabandoned."""
CONTENDED_BACKOFF_BASE_SECONDS = 0.05
"""First pause after an empty claim that followed work: other relays may have
taken the rows this one chose, and the backlog may not be drained."""


def reason(error: BaseException) -> str:
    """Render a delivery error as the text kept with the message (and logged).

    Storable by every backend and free of credentials (see
    `spakky.outbox.common.reasons.storable_reason`).
    """
    if isinstance(error, EventDeliveryRejectedError) and error.reasons:
        return storable_reason(f"{type(error).__name__}: {'; '.join(error.reasons)}")
    return storable_reason(f"{type(error).__name__}: {error}")


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
    ``last_error`` says so). Such a message failing again *the same way* (the
    same reason text) counts as refused even in a batch where nothing else was
    sent, so a lone poison message still runs out of budget and is abandoned
    instead of stalling its key. Failing any other way (a broker that went
    away: ``ConnectionError`` where it used to be ``ValueError: too large``) is
    an outage like any other, and spends nothing.
    """

    _LIMIT = 10_000

    def __init__(self) -> None:
        self._reasons: dict[UUID, str] = {}

    def known(self, message: OutboxMessage, error: BaseException) -> bool:
        """Whether ``message`` failed on its own before, with the reason ``error`` gives now."""
        failure = reason(error)
        remembered = self._reasons.get(message.id)
        if remembered is not None:
            return remembered == failure
        return message.retry_count > 0 and message.last_error == failure

    def remember(self, message_id: UUID, error: BaseException) -> None:
        """Note that the message failed alone, and how."""
        self._reasons[message_id] = reason(error)
        if len(self._reasons) > self._LIMIT:
            del self._reasons[next(iter(self._reasons))]

    def forget(self, message_id: UUID) -> None:
        """Drop the message (delivered or abandoned)."""
        if self._reasons:  # almost always empty: spare a delivered message the lookup
            self._reasons.pop(message_id, None)

    def forget_all(self, message_ids: list[UUID]) -> None:
        """Drop the messages (a delivered batch): nothing to do per message while none is remembered."""
        if self._reasons:
            for message_id in message_ids:
                self._reasons.pop(message_id, None)


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
    ABANDONED = "abandoned"
    """Budget spent and already abandoned in the storage: its key goes on in this batch."""
    RELEASED = "released"
    """Not sent, or sent unconfirmed: given back untouched."""


@dataclass(slots=True)
class _Tracked:
    """One message of a batch: its state and the error that put it there."""

    message: OutboxMessage
    state: MessageState = MessageState.CLAIMED
    error: BaseException | None = None


class ClaimedBatch:
    """One claimed batch as the relay works through it: every message's state in one place.

    Sending only moves messages between states; storage writes (acknowledge,
    refuse, release; an abandonment that lets a key go on) are serialised with
    the claim renewals, which renew only what no write has settled yet.

    The batch also knows how long its claims last on its own clock: from the
    moment the claim was asked for (``time.monotonic()`` before the storage
    call, so never later than the storage's own start of the lease) plus the
    lease, pushed by every renewal that kept every claim, never past the claim
    timeout. Nothing is sent or flushed once that time (less a margin of a
    tenth of the lease) has passed, once a renewal failed or was refused: a
    relay that was paused (a GC pause, a frozen VM) past its lease resumes
    without delivering a batch other relays may have taken over.
    """

    def __init__(
        self,
        messages: list[OutboxMessage],
        claimed_at: float,
        claim_timeout: float,
        lease: float | None,
    ) -> None:
        """Track ``messages`` claimed at monotonic time ``claimed_at``.

        Args:
            messages: The claimed messages, in claim order.
            claimed_at: ``time.monotonic()`` just before the claim was asked for.
            claim_timeout: The claim timeout (the longest any claim lasts).
            lease: The claim lease on storages with liveness; None when claims
                last the claim timeout.
        """
        self.messages = messages
        self.claimed_at = claimed_at
        self.claim_deadline = claimed_at + claim_timeout
        self._lease = lease
        span = claim_timeout if lease is None else min(lease, claim_timeout)
        self._margin = span * LEASE_MARGIN
        self.lease_deadline = claimed_at + span
        """Monotonic time the claims may have lapsed by, as far as this relay knows."""
        # Keyed by the message object's identity: the relay only ever hands back
        # the batch's own messages, and an int hashes in C where a UUID does not.
        self._tracked = {id(m): _Tracked(m) for m in messages}
        # Per state, its messages in the order they reached it (a dict keeps
        # insertion order): listing a state costs no scan of the batch, no sort.
        self._states: dict[MessageState, dict[int, _Tracked]] = {state: {} for state in MessageState}
        self._states[MessageState.CLAIMED] = dict(self._tracked)
        # What storage writes settled, one list per write: a set is made only when a
        # renewal asks (`holding`), so an acknowledgement hashes no UUID.
        self._settled: list[list[UUID]] = []
        self.halted: set[str] = set()
        self.outage: BaseException | None = None
        self.lost = False
        """A renewal was refused: another relay (or time) took some of the claims."""
        self.renewal_failed = False
        """A renewal failed: the claims may lapse, so nothing more is sent."""
        self._lapse_logged = False
        self._streak = 0

    def _move(self, message: OutboxMessage, state: MessageState, error: BaseException | None = None) -> None:
        key = id(message)
        tracked = self._tracked[key]
        del self._states[tracked.state][key]
        self._states[state][key] = tracked
        tracked.state, tracked.error = state, error

    def _in(self, state: MessageState) -> list[_Tracked]:
        """Messages in ``state``, in the order they reached it."""
        return list(self._states[state].values())

    def in_state(self, state: MessageState) -> list[OutboxMessage]:
        """Messages in ``state``, in the order they reached it."""
        return [t.message for t in self._in(state)]

    def refusals(self) -> list[tuple[OutboxMessage, BaseException]]:
        """Refused messages with their errors, in the order they were refused."""
        return [(t.message, t.error) for t in self._in(MessageState.REFUSED) if t.error is not None]

    def refused_error(self, message: OutboxMessage) -> BaseException | None:
        """The refusal ``message`` just met, if it is refused."""
        tracked = self._tracked[id(message)]
        return tracked.error if tracked.state is MessageState.REFUSED else None

    # --- the claims' lifetime ---------------------------------------------------

    def _claims_held(self) -> bool:
        """Whether this relay may still start delivering: claims neither lost nor lapsed."""
        if self.lost:
            return False
        if time.monotonic() < self.lease_deadline - self._margin:
            return True
        if not self._lapse_logged:
            self._lapse_logged = True
            logger.error(
                "Outbox claims of this batch may have lapsed (%.1f s since the claim: the relay "
                "was paused or stalled past its lease); sending nothing more of it",
                time.monotonic() - self.claimed_at,
            )
        return False

    def may_send(self) -> bool:
        """Whether a send may start: claims held and no renewal failed."""
        return not self.renewal_failed and self._claims_held()

    def on_renewed(self, kept: int, held: int, started: float) -> None:
        """Record a renewal's answer (asked at monotonic ``started``).

        Every claim kept pushes the batch's deadline; fewer kept than held
        means claims were lost (taken over after a lapse this relay did not
        see, e.g. a step of the storage server's clock): nothing more is sent
        or flushed.
        """
        if kept >= held:
            if self._lease is not None:
                self.lease_deadline = min(started + self._lease, self.claim_deadline)
            return
        if not self.lost:
            logger.warning(
                "Lost %d of %d outbox claims to another relay or to time; sending nothing more of this batch",
                held - kept, held,
            )
        self.lost = True

    def on_renewal_failed(self, held: int, error: Exception) -> None:
        """A renewal failed: the claims may lapse unseen, so nothing more is sent."""
        if not self.renewal_failed:
            logger.warning(
                "Could not renew %d outbox claims; sending nothing more of this batch: %s", held, reason(error)
            )
        self.renewal_failed = True

    def holding(self) -> list[UUID]:
        """Ids this relay still holds: claimed, and not settled by a storage write yet."""
        settled = {message_id for ids in self._settled for message_id in ids}
        return [m.id for m in self.messages if m.id not in settled]

    def settled(self, ids: list[UUID]) -> None:
        """A storage write took (or gave up on) ``ids``: they are no longer renewed."""
        self._settled.append(ids)

    # --- sending ------------------------------------------------------------------

    def sendable(self, message: OutboxMessage, stopping: bool) -> bool:
        """Whether to send ``message`` now; if not (stop, outage, claims in doubt, key held), release it."""
        # The usual case in one call: nothing stops, halts or doubts the batch, and the lease holds.
        if (
            not stopping
            and self.outage is None
            and not self.halted
            and not self.renewal_failed
            and not self.lost
            and time.monotonic() < self.lease_deadline - self._margin
        ):
            return True
        if stopping or self.outage is not None or self.blocked(message) or not self.may_send():
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
        logger.warning("Transport refused outbox message %s: %s", message.id, reason(error))
        self._move(message, MessageState.REFUSED, error)
        self._halt(message)
        self._streak = 0

    def on_abandoned(self, message: OutboxMessage) -> None:
        """``message`` (budget spent) is abandoned in the storage: its key goes on in this batch.

        Only a message whose key was not held when it was sent can get here,
        so the key was held back by this message alone.
        """
        self._move(message, MessageState.ABANDONED)
        if message.partition_key is not None:
            self.halted.discard(message.partition_key)

    def on_abandon_failed(self, message: OutboxMessage) -> None:
        """Abandoning ``message`` did not land: it is given back, and its key waits for it."""
        self._move(message, MessageState.RELEASED)
        self._halt(message)

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

    def flushable(self) -> bool:
        """Whether to flush now: something was sent and the claims still hold.

        With the claims in doubt, what was sent is released unconfirmed (a
        transport that buffers until its flush may still deliver it later).
        """
        sent = self.in_state(MessageState.SENT)
        if not sent:
            return False
        if self._claims_held():
            return True
        for message in sent:
            self._move(message, MessageState.RELEASED)
        return False

    def on_flushed(self) -> None:
        """The flush confirmed everything sent."""
        # Every sent message moves, in the order sent: one dict update, not a move each.
        sent, delivered = self._states[MessageState.SENT], self._states[MessageState.DELIVERED]
        for tracked in sent.values():
            tracked.state, tracked.error = MessageState.DELIVERED, None
        delivered.update(sent)
        sent.clear()

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
        logger.error("Flush failed; releasing %d messages: %s", len(sent), reason(error))
        self.outage = error
        for message in sent:
            self._move(message, MessageState.RELEASED)
        return []

    def confirming(self, message: OutboxMessage) -> bool:
        """Whether to replay ``message`` alone now; if its key is held back or the claims are in doubt, release it."""
        if self.blocked(message) or not self.may_send():
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
        logger.error("Transport failed while confirming; releasing the rest: %s", reason(error))
        self.outage = error
        for unconfirmed in self.in_state(MessageState.SENT):
            self._move(unconfirmed, MessageState.RELEASED)
        return False

    def judge_suspects(self, poison: PoisonMemory) -> list[OutboxMessage]:
        """Decide the suspects' fate; return those to retry alone.

        Something of the batch got through: the failures were the messages'
        own, and each gets one more try alone. Nothing got through: if only
        messages already known as poison failed, each the way it failed before,
        they count as refused again; any other failure means the transport is
        down, and every suspect goes back untouched with nobody's budget spent.
        """
        suspects = self._in(MessageState.SUSPECT)
        if not suspects:
            return []
        if self.outage is None and self.in_state(MessageState.DELIVERED):
            for tracked in suspects:
                logger.warning(
                    "Outbox message %s failed while others went through; retrying it alone: %s",
                    tracked.message.id, reason(tracked.error) if tracked.error is not None else "",
                )
            return [t.message for t in suspects]
        if self.outage is None and all(
            t.error is not None and poison.known(t.message, t.error) for t in suspects
        ):
            for tracked in suspects:
                self._move(tracked.message, MessageState.REFUSED, tracked.error)
            return []
        self.outage = self.outage or suspects[-1].error
        logger.error(
            "Transport unavailable; releasing the batch untouched: %s",
            "" if self.outage is None else reason(self.outage),
        )
        for tracked in suspects:
            self._move(tracked.message, MessageState.RELEASED)
        return []

    def retrying_alone(self, message: OutboxMessage) -> bool:
        """Whether to retry suspect ``message`` alone now; with the claims in doubt, release it."""
        if self.may_send():
            return True
        self._move(message, MessageState.RELEASED)
        return False

    def on_failed_alone(self, message: OutboxMessage, error: Exception, poison: PoisonMemory) -> None:
        """A suspect failed again alone: it is poison, refused with its own error."""
        logger.error("Outbox message %s failed again alone; counting it as refused", message.id)
        poison.remember(message.id, error)
        self._move(message, MessageState.REFUSED, error)


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
        self.name = f"{socket.gethostname()}/{os.getpid()}"
        """How the relay names itself in logs: host and process id."""

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
        """Whether to apply retention now (at most every 15 s)."""
        now = time.monotonic()
        if not self.wants_housekeeping() or now < self._next_housekeeping:
            return False
        self._next_housekeeping = now + HOUSEKEEPING_INTERVAL_SECONDS
        return True

    def retention_age(self) -> timedelta | None:
        """Published messages older than this (by the storage's clock) are purged; None keeps them.

        An age, not a moment on this relay's clock: a relay whose clock runs
        ahead of the database must not purge messages younger than the retention.
        """
        retention = self.config.published_retention_seconds
        return None if retention is None else timedelta(seconds=retention)

    def wants_housekeeping(self) -> bool:
        """Whether retention needs the periodic pass (metrics read the backlog themselves)."""
        return self.config.published_retention_seconds is not None

    def relayed(self, ids: list[UUID], acknowledged: int) -> None:
        """Count the ``acknowledged`` of delivered ``ids`` (the rest were fenced off); forget them as poison."""
        if self.metrics is not None and acknowledged:
            self.metrics.record_relayed(acknowledged)
        self.poison.forget_all(ids)

    def new_batch(self, messages: list[OutboxMessage], claimed_at: float, *, liveness: bool) -> ClaimedBatch:
        """Track a claimed batch; ``liveness``: the storage renews leases (else claims last the claim timeout)."""
        lease = self.config.claim_lease_seconds if liveness else None
        return ClaimedBatch(messages, claimed_at, self.config.claim_timeout_seconds, lease)

    def claim_max_retry(self, abandons: bool) -> int:
        """The ``max_retry`` to claim with.

        With a storage that abandons with a reason (retry scheduling), the
        relay claims spent messages too and abandons them itself (`spent`):
        a ``MAX_RETRY_COUNT`` lowered since they were refused, or a relay
        running with a lower value, then leaves nothing stranded. Other
        storages get the setting, as in 8.5.
        """
        return NO_RETRY_LIMIT if abandons else self.config.max_retry_count

    def exhausts(self, message: OutboxMessage) -> bool:
        """Whether one more refusal spends the last of ``message``'s budget."""
        return message.retry_count + 1 >= self.config.max_retry_count

    def spent(self, message: OutboxMessage) -> bool:
        """Whether ``message`` already spent its budget under this relay's setting."""
        return message.retry_count >= self.config.max_retry_count

    def spent_reason(self, message: OutboxMessage) -> str:
        """Why a message claimed with its budget already spent is abandoned unsent."""
        text = (
            f"retry budget spent before this attempt: {message.retry_count} refusals reach "
            f"SPAKKY_OUTBOX__MAX_RETRY_COUNT={self.config.max_retry_count} (lowered since, or "
            "another relay runs with a higher value)"
        )
        if message.last_error:
            text += f"; last error: {message.last_error}"
        return storable_reason(text)

    def refusal_recorded(self, message: OutboxMessage, *, abandoned: bool) -> None:
        """A refusal landed in the storage: count it (and the abandonment it caused)."""
        if self.metrics is not None:
            self.metrics.record_failed(1)
            if abandoned:
                self.metrics.record_abandoned(1)
        if abandoned:
            self.poison.forget(message.id)
            logger.error("Abandoned outbox message %s after %d attempts", message.id, message.retry_count + 1)

    def spent_abandoned(self, message: OutboxMessage) -> None:
        """A message claimed with its budget spent was abandoned unsent."""
        if self.metrics is not None:
            self.metrics.record_abandoned(1)
        self.poison.forget(message.id)
        logger.error(
            "Abandoned outbox message %s unsent: its %d refusals reach MAX_RETRY_COUNT=%d",
            message.id, message.retry_count, self.config.max_retry_count,
        )

    @staticmethod
    def attempt_reason(text: str, attempt: int) -> str:
        """The reason to write at ``attempt``: the last attempt escapes non-ASCII, for a column that refuses it."""
        return ascii_reason(text) if attempt + 1 >= MESSAGE_SETTLE_ATTEMPTS else text

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

    def settle_failed(
        self, batch: ClaimedBatch, what: str, attempt: int, error: Exception, *, one_message: bool
    ) -> float | None:
        """A storage write of ``batch`` failed: the pause before retrying, or None to give up.

        A write about one message (refuse, abandon, release) gets
        `MESSAGE_SETTLE_ATTEMPTS`: failing for that message alone, it must not
        hold the relay up, and giving it up only delays the message (its claim
        ends, its budget unspent). An acknowledgement is retried until the
        claim is provably over (the claim timeout passed since the claim:
        another relay may own the message) or a stop's grace ran out.
        """
        now = time.monotonic()
        stop = self.stop_requested_at
        if (
            now >= batch.claim_deadline
            or (stop is not None and now - stop >= STOP_GRACE_SECONDS)
            or (one_message and attempt + 1 >= MESSAGE_SETTLE_ATTEMPTS)
        ):
            logger.error("Giving up to %s outbox messages after %d attempts: %s", what, attempt + 1, reason(error))
            return None
        if attempt == 0:
            logger.warning(
                "Could not %s outbox messages; retrying until the storage takes it: %s", what, reason(error)
            )
        return backoff_delay(attempt, SETTLE_BACKOFF_BASE_SECONDS, SETTLE_BACKOFF_MAX_SECONDS)

    def settled(self, what: str, attempt: int, asked: int, count: int | None) -> int:
        """A storage write about ``asked`` messages landed (after ``attempt`` retries) and settled ``count``.

        Fewer settled than asked means the rest were fenced off: their claims
        were taken over (this relay was paused past its lease, or the storage's
        clock stepped), so another relay delivers them again. That is logged
        and counted, never reported as the storage taking the write.

        Returns:
            How many were settled (``asked`` when the storage cannot tell).
        """
        settled = asked if count is None else count
        if settled < asked:
            fenced = asked - settled
            logger.warning(
                "Outbox relay %s: %s of %d of %d messages fenced off: their claims were taken over by "
                "another relay after a lapse, which delivers them again%s",
                self.name, what, fenced, asked,
                f" (or one of the {attempt} failed attempts before had landed)" if attempt else "",
            )
            if self.metrics is not None:
                self.metrics.record_fenced(fenced)
        elif attempt:
            logger.info("Outbox storage took the %s after %d retries", what, attempt)
        return settled

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
