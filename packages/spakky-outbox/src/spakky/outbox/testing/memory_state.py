"""The in-memory reference's shared store: messages, claims, inbox and business records of one application.

`InMemoryOutboxState` does all the work under one lock; the storages of both
flavours (`spakky.outbox.testing.async_memory` and its generated twin
`spakky.outbox.testing.sync_memory`) are thin views on it with their own owner
token, standing for relay processes.
"""

import asyncio
import threading
from collections.abc import Callable, Generator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.backend.claims import choose_batch, key_run, within_bytes
from spakky.outbox.common.config import DEFAULT_BATCH_MAX_BYTES, OutboxConfig
from spakky.outbox.common.figures import RELAY_FIGURES_RETENTION, RelayFigures
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import (
    KEY_HEADS_WINDOW,
    RELAY_CLAIMS_WINDOW,
    KeyHead,
    MessageDetail,
    OutboxStats,
    RelayClaims,
    relay_claims_of,
)
from spakky.outbox.error import OutboxTransactionRequiredError
from spakky.outbox.inbox.error import InboxConflictError
from spakky.outbox.ports.inbox import InboxLease, InboxStats, LeaseOutcome

type Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Return the current UTC time."""
    return datetime.now(UTC)


class ManualClock:
    """A clock tests move by hand, so claim expiry and backoff need no waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        """Start at ``start`` (default: now)."""
        self.now = start or system_clock()

    def __call__(self) -> datetime:
        """Return the clock's current time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += timedelta(seconds=seconds)


@dataclass
class _Record:
    message: OutboxMessage
    seq: int
    claimed_by: UUID | None = None
    claimed_at: datetime | None = None
    lease_until: datetime | None = None
    not_before: datetime | None = None
    published_at: datetime | None = None
    abandoned_at: datetime | None = None
    retry_count: int = 0
    last_error: str | None = None

    @property
    def pending(self) -> bool:
        return self.published_at is None and self.abandoned_at is None

    def view(self) -> OutboxMessage:
        return replace(
            self.message,
            published_at=self.published_at,
            retry_count=self.retry_count,
            claimed_at=self.claimed_at,
            abandoned_at=self.abandoned_at,
            last_error=self.last_error,
        )


type InboxKey = tuple[str, str]
"""(consumer name, message identity)."""


@dataclass
class InboxEntry:
    """One inbox record: when it was written and, in lease mode, its unfinished lease."""

    recorded_at: datetime
    lease_until: datetime | None = None
    lease_owner: str | None = None


@dataclass
class Pending:
    """One open transaction's writes, applied together at commit."""

    messages: list[OutboxMessage] = field(default_factory=list[OutboxMessage])
    business: dict[str, object] = field(default_factory=dict[str, object])
    inbox: set[InboxKey] = field(default_factory=set[InboxKey])


@Pod()
class InMemoryOutboxState:
    """The shared store behind every in-memory storage instance of one application."""

    def __init__(self) -> None:
        """Create an empty store on the system clock."""
        self.clock: Clock = system_clock
        self.claim_timeout = timedelta(seconds=300)
        self.claim_lease = timedelta(seconds=10)
        self.batch_max_bytes = DEFAULT_BATCH_MAX_BYTES
        self.records: dict[UUID, _Record] = {}
        self.business: dict[str, object] = {}
        self.inbox: dict[InboxKey, InboxEntry] = {}
        self.figures: list[RelayFigures] = []
        """The relays' windows, as written."""
        self._seq = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._version = 0
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._transaction: ContextVar[Pending | None] = ContextVar(
            f"spakky_outbox_memory_tx_{id(self)}", default=None
        )

    # --- transactions ---------------------------------------------------------

    def begin(self) -> Token[Pending | None]:
        """Open a transaction in the current context."""
        return self._transaction.set(Pending())

    def commit(self) -> None:
        """Apply the current transaction's business writes and messages atomically."""
        pending = self._transaction.get()
        if pending is None:
            return
        self._transaction.set(Pending())
        self._apply_inbox(pending.inbox)
        self._apply(pending.messages, pending.business)

    def rollback(self) -> None:
        """Discard the current transaction's writes."""
        if self._transaction.get() is not None:
            self._transaction.set(Pending())

    def end(self, token: Token[Pending | None]) -> None:
        """Close the transaction opened with ``token``."""
        self._transaction.reset(token)

    @contextmanager
    def transaction(self, *, commit: bool = True) -> Generator[None]:
        """Run a block in a transaction that commits (or rolls back) at the end."""
        token = self.begin()
        try:
            yield
            if commit:
                self.commit()
        finally:
            self.end(token)

    def put_business(self, key: str, value: object) -> None:
        """Write a business record in the current transaction (or at once)."""
        pending = self._transaction.get()
        if pending is None:
            self._apply([], {key: value})
        else:
            pending.business[key] = value

    def save(self, message: OutboxMessage) -> None:
        """Queue a message in the current transaction, or store it at once outside one."""
        pending = self._transaction.get()
        if pending is None:
            self._apply([message], {})
        else:
            pending.messages.append(message)

    def _apply_inbox(self, inbox: set[InboxKey]) -> None:
        """Store a committing transaction's inbox records, first of its writes.

        Optimistic, like a Redis WATCH: a record another transaction committed
        since this one checked fails the whole commit, before anything is applied.
        """
        if not inbox:
            return
        with self._lock:
            if taken := inbox & self.inbox.keys():
                raise InboxConflictError(", ".join(f"{c!r} {m!r}" for c, m in sorted(taken)))
            now = self.clock()
            for key in inbox:
                self.inbox[key] = InboxEntry(recorded_at=now)

    def _apply(self, messages: Sequence[OutboxMessage], business: dict[str, object]) -> None:
        with self._lock:
            self.business.update(business)
            for message in messages:
                self._seq += 1
                self.records[message.id] = _Record(
                    message=message, seq=self._seq, retry_count=message.retry_count
                )
            if messages:
                self._version += 1
                self._changed.notify_all()
                for loop, event in list(self._async_waiters):
                    loop.call_soon_threadsafe(event.set)

    # --- claims and acknowledgements -----------------------------------------

    def claim(self, owner: UUID, limit: int, max_retry: int) -> list[OutboxMessage]:
        """Claim the oldest eligible messages, keeping each key's order.

        Keyless messages come oldest first; keys come as runs (see
        `choose_batch`), visited in the order of their oldest message.
        """
        with self._lock:
            now = self.clock()
            run = key_run(limit)
            keyless: list[_Record] = []
            runs: dict[str, list[_Record]] = {}
            closed: set[str] = set()
            for record in self.records.values():
                if not record.pending:
                    continue
                key = record.message.partition_key
                if key is None:
                    if len(keyless) < limit and self._eligible(record, now, max_retry):
                        keyless.append(record)
                elif key not in closed:
                    prefix = runs.setdefault(key, [])
                    if len(prefix) < run and self._eligible(record, now, max_retry):
                        prefix.append(record)
                    else:
                        closed.add(key)
            chosen = within_bytes(
                choose_batch(keyless, runs.values(), limit, lambda r: r.seq),
                lambda r: len(r.message.payload),
                self.batch_max_bytes,
            )
            for record in chosen:
                record.claimed_by, record.claimed_at = owner, now
                record.lease_until = now + self.claim_lease
            return [record.view() for record in chosen]

    def _eligible(self, record: _Record, now: datetime, max_retry: int) -> bool:
        if record.retry_count >= max_retry:
            return False
        if record.not_before is not None and record.not_before > now:
            return False
        return not self._claim_live(record, now)

    def _claim_live(self, record: _Record, now: datetime) -> bool:
        """Whether a claim holds: within the claim timeout and its lease."""
        if record.claimed_at is None or record.claimed_at + self.claim_timeout <= now:
            return False
        return record.lease_until is None or record.lease_until > now

    def _owned(self, owner: UUID, message_id: UUID) -> _Record | None:
        record = self.records.get(message_id)
        if record is None or record.claimed_by != owner or not record.pending:
            return None
        return record

    def publish(self, owner: UUID, ids: Sequence[UUID]) -> int:
        """Mark this owner's claimed messages published; count them (the rest are fenced off)."""
        with self._lock:
            published = 0
            for message_id in ids:
                if record := self._owned(owner, message_id):
                    record.published_at = self.clock()
                    record.claimed_by = record.claimed_at = None
                    published += 1
            return published

    def increment_retry(self, owner: UUID, message_id: UUID) -> None:
        """Spend one retry and keep the claim until it expires (6.x behaviour)."""
        with self._lock:
            if record := self._owned(owner, message_id):
                record.retry_count += 1

    def schedule_retry(self, owner: UUID, message_id: UUID, delay: float, error: str) -> None:
        """Spend one retry, keep the error and release the claim until ``delay`` passed."""
        with self._lock:
            if record := self._owned(owner, message_id):
                record.retry_count += 1
                record.last_error = error
                record.claimed_by = record.claimed_at = None
                record.not_before = self.clock() + timedelta(seconds=delay)

    def abandon(self, owner: UUID, message_id: UUID, error: str | None) -> None:
        """Give up on a message, keeping it readable with its reason."""
        with self._lock:
            if record := self._owned(owner, message_id):
                record.abandoned_at = self.clock()
                record.claimed_by = record.claimed_at = None
                if error is not None:
                    record.last_error = error

    def release(self, owner: UUID, ids: Sequence[UUID]) -> None:
        """Drop this owner's claims without spending budget."""
        with self._lock:
            for message_id in ids:
                if record := self._owned(owner, message_id):
                    record.claimed_by = record.claimed_at = None

    def renew(self, owner: UUID, ids: Sequence[UUID]) -> int:
        """Extend the lease of this owner's claims younger than the claim timeout."""
        with self._lock:
            now = self.clock()
            renewed = 0
            for message_id in ids:
                record = self._owned(owner, message_id)
                if record is None or record.claimed_at is None:
                    continue
                if record.claimed_at + self.claim_timeout <= now:
                    continue
                record.lease_until = now + self.claim_lease
                renewed += 1
            return renewed

    # --- inbox -------------------------------------------------------------------

    def record_inbox(self, key: InboxKey) -> bool:
        """Record ``key`` in the current transaction; False when it is there already."""
        pending = self._transaction.get()
        if pending is None:
            raise OutboxTransactionRequiredError()
        with self._lock:
            if key in self.inbox or key in pending.inbox:
                return False
        pending.inbox.add(key)
        return True

    def acquire_lease(self, key: InboxKey, lease_seconds: float) -> InboxLease:
        """Record ``key`` with a lease at once, or take over a lapsed one."""
        with self._lock:
            now = self.clock()
            entry = self.inbox.get(key)
            if entry is not None and entry.lease_until is None:
                return InboxLease(LeaseOutcome.DONE)
            if entry is not None and entry.lease_until is not None and entry.lease_until > now:
                return InboxLease(LeaseOutcome.BUSY)
            token = uuid4().hex
            self.inbox[key] = InboxEntry(
                recorded_at=now, lease_until=now + timedelta(seconds=lease_seconds), lease_owner=token
            )
            return InboxLease(LeaseOutcome.ACQUIRED, token)

    def finish_lease(self, key: InboxKey, token: str) -> bool:
        """Mark the record done when ``token`` still holds its lease."""
        with self._lock:
            entry = self.inbox.get(key)
            if entry is None or entry.lease_owner != token:
                return False
            self.inbox[key] = InboxEntry(recorded_at=self.clock())
            return True

    def release_lease(self, key: InboxKey, token: str) -> None:
        """Drop the record when ``token`` still holds its lease."""
        with self._lock:
            entry = self.inbox.get(key)
            if entry is not None and entry.lease_owner == token:
                del self.inbox[key]

    def purge_inbox(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` inbox records written before ``before``."""
        with self._lock:
            doomed = [key for key, entry in self.inbox.items() if entry.recorded_at < before][:limit]
            for key in doomed:
                del self.inbox[key]
            return len(doomed)

    def inbox_stats(self) -> InboxStats:
        """Count the inbox records."""
        with self._lock:
            entries = list(self.inbox.values())
            return InboxStats(
                records=len(entries),
                leased=sum(e.lease_until is not None for e in entries),
                oldest_recorded_at=min((e.recorded_at for e in entries), default=None),
            )

    # --- wake-up ---------------------------------------------------------------

    @property
    def version(self) -> int:
        """Counter raised by every commit that stores messages."""
        return self._version

    def wait(self, seen: int, timeout: float) -> bool:
        """Block until a commit after version ``seen`` or until ``timeout`` passes."""
        with self._lock:
            return self._changed.wait_for(lambda: self._version != seen, timeout)

    async def wait_async(self, seen: int, timeout: float) -> bool:
        """Wait until a commit after version ``seen`` or until ``timeout`` passes."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if self._version != seen:
                return True
            self._async_waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter[1].wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._async_waiters.discard(waiter)

    # --- administration ------------------------------------------------------

    def stats(self) -> OutboxStats:
        """Count messages by state."""
        with self._lock:
            now = self.clock()
            pending = [r for r in self.records.values() if r.pending]
            claimed = [r for r in pending if r.claimed_by is not None and self._claim_live(r, now)]
            oldest = min((r.message.created_at for r in pending), default=None)
            return OutboxStats(
                pending=len(pending),
                claimed=len(claimed),
                published=sum(r.published_at is not None for r in self.records.values()),
                abandoned=sum(r.abandoned_at is not None for r in self.records.values()),
                oldest_pending_age_seconds=(
                    None if oldest is None else max(0.0, (now - oldest).total_seconds())
                ),
            )

    def list_abandoned(self, limit: int) -> list[OutboxMessage]:
        """Return abandoned messages, oldest first."""
        with self._lock:
            return [r.view() for r in self.records.values() if r.abandoned_at is not None][:limit]

    def key_heads(self, limit: int, after: UUID | None) -> list[KeyHead]:
        """The heads of up to ``limit`` keys, oldest first, after the head ``after``, among the first window of keys."""
        with self._lock:
            now = self.clock()
            heads: dict[str, _Record] = {}
            for record in sorted(self.records.values(), key=lambda r: r.seq):
                key = record.message.partition_key
                if record.pending and key is not None and key not in heads:
                    if len(heads) >= KEY_HEADS_WINDOW:
                        break
                    heads[key] = record
            cursor = self.records.get(after) if after is not None else None
            start = 0 if cursor is None else cursor.seq
            page = [r for r in heads.values() if r.seq > start][: max(0, limit)]
            return [self._detail(KeyHead, record, now) for record in page]

    def get_message(self, message_id: UUID) -> MessageDetail | None:
        """One message in whatever state, with what holds it now; None when there is none with that id."""
        with self._lock:
            record = self.records.get(message_id)
            return None if record is None else self._detail(MessageDetail, record, self.clock())

    def relay_claims(self) -> list[RelayClaims]:
        """Live claims among the first window of pending messages of each lane, grouped by owner."""
        with self._lock:
            now = self.clock()
            pending = [r for r in sorted(self.records.values(), key=lambda r: r.seq) if r.pending]
            keyless = [r for r in pending if r.message.partition_key is None][:RELAY_CLAIMS_WINDOW]
            keyed = [r for r in pending if r.message.partition_key is not None][:RELAY_CLAIMS_WINDOW]
            held = [self._detail(MessageDetail, r, now) for r in (*keyless, *keyed)]
            return relay_claims_of(
                (d.claimed_by, d.lease_until) for d in held if d.claimed_by is not None and d.lease_until is not None
            )

    def _detail[D: MessageDetail](self, kind: type[D], record: _Record, now: datetime) -> D:
        live = record.pending and record.claimed_by is not None and self._claim_live(record, now)
        if live and record.claimed_at is not None:
            ends = record.claimed_at + self.claim_timeout
            lease_until = ends if record.lease_until is None else min(ends, record.lease_until)
        else:
            lease_until = None
        due = record.pending and record.not_before is not None and record.not_before > now
        return kind(
            message=record.view(),
            claimed_by=str(record.claimed_by) if live else None,
            lease_until=lease_until,
            not_before=record.not_before if due else None,
        )

    def requeue_abandoned(self, ids: Sequence[UUID] | None, limit: int) -> int:
        """Make up to ``limit`` abandoned messages pending again with a fresh budget."""
        with self._lock:
            wanted = None if ids is None else set(ids)
            count = 0
            for record in self.records.values():
                if count >= limit:
                    break
                if record.abandoned_at is None or (wanted is not None and record.message.id not in wanted):
                    continue
                record.abandoned_at = record.not_before = None
                record.claimed_by = record.claimed_at = record.lease_until = None
                record.retry_count = 0
                count += 1
            return count

    def write_relay_figures(self, figures: RelayFigures) -> None:
        """Keep one relay window; drop those that ended `RELAY_FIGURES_RETENTION` before it."""
        with self._lock:
            cutoff = figures.ended_at - RELAY_FIGURES_RETENTION
            self.figures = [kept for kept in self.figures if kept.ended_at >= cutoff]
            self.figures.append(figures)

    def relay_figures(self, since: datetime, limit: int) -> list[RelayFigures]:
        """Up to ``limit`` windows that ended after ``since``, the latest end first."""
        with self._lock:
            recent = [kept for kept in self.figures if kept.ended_at > since]
            return sorted(recent, key=lambda kept: kept.ended_at, reverse=True)[: max(0, limit)]

    def purge_published(self, before: datetime | timedelta, limit: int) -> int:
        """Delete up to ``limit`` messages published before ``before`` (an age: on this store's clock)."""
        with self._lock:
            if isinstance(before, timedelta):
                before = self.clock() - before
            doomed = [
                message_id for message_id, r in self.records.items()
                if r.published_at is not None and r.published_at < before
            ][:limit]
            for message_id in doomed:
                del self.records[message_id]
            return len(doomed)


class InMemoryOutboxView:
    """One storage instance's view of the shared state: its owner token and settings.

    Both flavours of storage build on it; their constructors take the same Pods.
    """

    def __init__(self, state: InMemoryOutboxState, config: OutboxConfig) -> None:
        """Bind to the shared state with a new owner token."""
        self._state = state
        self._owner = uuid4()
        self._seen_version = state.version
        state.claim_timeout = timedelta(seconds=config.claim_timeout_seconds)
        state.claim_lease = timedelta(seconds=config.claim_lease_seconds)
        state.batch_max_bytes = config.batch_max_bytes
