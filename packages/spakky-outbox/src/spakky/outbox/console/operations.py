"""What the console reads and does, on any storage with the administration capability.

Pages and the JSON API both go through `OutboxConsoleService`, so they show
the same figures and act the same way. Every read and every action is
bounded: a page holds at most `MAX_PAGE_SIZE` rows, failure groups are built
from at most `GROUP_WINDOW` abandoned messages, and one confirmed action
changes at most `ACTION_BATCH` messages (a larger scope takes several);
key heads come a page at a time from at most `KEY_HEADS_WINDOW` keys.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from uuid import UUID

from spakky.outbox.application.loop import StorageLoop
from spakky.outbox.common.figures import (
    COMMIT_TO_SEND_BUCKETS,
    RELAY_FIGURES_READ_LIMIT,
    FiguresSlot,
    merge_figures,
    quantile,
)
from spakky.outbox.common.fingerprint import FailureKind, failure_kind
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import (
    KeyHead,
    MessageDetail,
    OutboxStats,
    OutboxTarget,
    RelayClaims,
)
from spakky.outbox.console.audit import AuditEntry, IAsyncConsoleAuditLog, audit_logger
from spakky.outbox.console.config import ACTION_BATCH, MAX_PAGE_SIZE
from spakky.outbox.console.error import ConsoleNotFoundError, ConsoleRequestError
from spakky.outbox.console.security import Claims
from spakky.outbox.error import OutboxRelayClaimsUnsupportedError
from spakky.outbox.ports.storage import (
    IAsyncOutboxAdministration,
    IAsyncOutboxRelayFigures,
)
from spakky.outbox.relay.health import OutboxHealth, OutboxHealthCheck

GROUP_WINDOW = 1_000
"""Abandoned messages, oldest first, that failure groups are built from."""
DELIVERY_PERIOD = timedelta(hours=1)
"""How far back the overview's delivery chart goes."""
DELIVERY_SLOT = timedelta(minutes=1)
"""One bar of the delivery chart: the relays' windows that ended in it, added up."""


class ConsoleAction(StrEnum):
    """What an operator can do from the console."""

    REQUEUE = "requeue"
    """Make abandoned messages pending again with a fresh retry budget."""
    PURGE_PUBLISHED = "purge-published"
    """Delete messages published before a cutoff."""


class Scope(StrEnum):
    """Which abandoned messages a requeue takes."""

    MESSAGE = "message"
    SELECTION = "selection"
    GROUP = "group"
    ALL = "all"


class MessageState(StrEnum):
    """Where a message stands now; for a key's head, why the key is not moving."""

    CLAIMED = "claimed"
    """A relay holds it (a live claim): its key waits for that relay until the claim ends."""
    RETRYING = "retrying"
    """It failed and waits for its retry time: its key waits with it."""
    WAITING = "waiting"
    """Undelivered and nobody holds it: the next relay cycle may claim it."""
    PUBLISHED = "published"
    """Delivered to the broker."""
    ABANDONED = "abandoned"
    """The relay gave up on it; it waits for an operator (requeue or purge)."""


def message_state(detail: MessageDetail) -> MessageState:
    """Where ``detail`` stands: delivered, given up, held by a live claim, waiting for a retry, or free."""
    if detail.message.published_at is not None:
        return MessageState.PUBLISHED
    if detail.message.abandoned_at is not None:
        return MessageState.ABANDONED
    if detail.claimed_by is not None:
        return MessageState.CLAIMED
    if detail.not_before is not None:
        return MessageState.RETRYING
    return MessageState.WAITING


@dataclass(frozen=True)
class KeyPage:
    """One page of key heads, oldest first."""

    heads: list[KeyHead]
    after: UUID | None
    """The head this page starts after (None: the first page)."""
    next_after: UUID | None
    """Where the next page starts; None when this page is the last one."""


@dataclass(frozen=True)
class Delivery:
    """Delivery rate and commit-to-send over the last `DELIVERY_PERIOD`, from the relays' own figures."""

    slots: list[FiguresSlot]
    """One per `DELIVERY_SLOT`, oldest first (a slot without windows counts zero)."""
    windows: int
    """Relay windows read (at most `RELAY_FIGURES_READ_LIMIT`)."""
    complete: bool
    """False when the read stopped at its limit: the oldest slots may miss windows."""

    @property
    def sent(self) -> int:
        """Messages delivered over the period."""
        return sum(slot.sent for slot in self.slots)

    @property
    def relays(self) -> int:
        """Most relays with a window in one slot."""
        return max((slot.relays for slot in self.slots), default=0)

    def _waits(self) -> tuple[list[int], float]:
        buckets = [0] * (len(COMMIT_TO_SEND_BUCKETS) + 1)
        for slot in self.slots:
            for index, count in enumerate(slot.commit_to_send):
                buckets[index] += count
        return buckets, max((slot.commit_to_send_max for slot in self.slots), default=0.0)

    @property
    def p50(self) -> float | None:
        """Median commit-to-send wait over the period (estimated from the buckets)."""
        buckets, longest = self._waits()
        return quantile(buckets, 0.5, longest)

    @property
    def p95(self) -> float | None:
        """95th percentile commit-to-send wait over the period (estimated from the buckets)."""
        buckets, longest = self._waits()
        return quantile(buckets, 0.95, longest)


@dataclass(frozen=True)
class Overview:
    """The first page: where, how much, and the health verdict."""

    target: OutboxTarget
    stats: OutboxStats
    health: OutboxHealth | None
    """The verdict of `OutboxHealthCheck`; None when the application has none."""
    relays: list[RelayClaims] | None = None
    """The relay instances holding live claims and what they hold; None when the storage cannot tell."""
    delivery: Delivery | None = None
    """The relays' own figures over the last hour; None when the storage keeps none."""


@dataclass(frozen=True)
class FailureGroup:
    """Abandoned messages that failed the same way."""

    kind: FailureKind
    count: int
    first_seen: datetime | None
    """When the earliest of them was abandoned."""
    last_seen: datetime | None
    """When the latest of them was abandoned."""
    sample_reason: str | None
    """The latest one's reason, as stored."""
    sample_id: UUID


@dataclass(frozen=True)
class FailureGroups:
    """Failure groups, largest first, and how much of the abandoned set they cover."""

    groups: list[FailureGroup]
    scanned: int
    """Abandoned messages looked at (at most `GROUP_WINDOW`, oldest first)."""
    abandoned: int
    """Abandoned messages in all."""

    @property
    def complete(self) -> bool:
        """Whether every abandoned message was looked at."""
        return self.scanned >= self.abandoned


@dataclass(frozen=True)
class Plan:
    """What an action would do: the dry run an operator confirms."""

    action: ConsoleAction
    count: int
    """Messages it would change now (this run changes at most `ACTION_BATCH`)."""
    description: str
    """The scope in words, for the confirmation and the audit log."""
    params: Claims = field(default_factory=lambda: {})
    """What the confirmation carries back to `OutboxConsoleService.execute`."""


@dataclass(frozen=True)
class Outcome:
    """What an action did."""

    entry: AuditEntry
    more: bool
    """Whether messages of the scope are left for another run."""


def _ids(values: Sequence[str]) -> list[UUID]:
    if not values:
        raise ConsoleRequestError("select at least one message")
    if len(values) > MAX_PAGE_SIZE:
        raise ConsoleRequestError(f"select at most {MAX_PAGE_SIZE} messages at once")
    try:
        return list(dict.fromkeys(UUID(value) for value in values))
    except ValueError:
        raise ConsoleRequestError("a selected id is not a message id (UUID)") from None


def _cutoff(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ConsoleRequestError(
            "give the cutoff as an ISO timestamp, e.g. 2026-01-31T00:00:00+00:00"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class OutboxConsoleService:
    """Reads and actions of the console over one storage's administration capability."""

    def __init__(
        self,
        storage: IAsyncOutboxAdministration,
        audit: IAsyncConsoleAuditLog,
        health: OutboxHealthCheck | None = None,
        max_pending_age_seconds: float | None = None,
        loop: StorageLoop | None = None,
    ) -> None:
        """Work on ``storage``, keep actions in ``audit``, judge health with ``health``."""
        self._storage = storage
        self._audit = audit
        self._health = health
        self._max_pending_age = max_pending_age_seconds
        self._loop = loop or StorageLoop()

    @property
    def max_pending_age_seconds(self) -> float | None:
        """The pending age limit the health verdict uses."""
        return self._max_pending_age

    def target(self) -> OutboxTarget:
        """Where the outbox lives (no secret)."""
        return self._storage.target()

    async def health(self) -> OutboxHealth | None:
        """The same verdict as ``spakky-outbox health`` with the console's age limit."""
        if self._health is None:
            return None
        return await self._loop.run(self._health.check(self._max_pending_age))

    async def overview(self) -> Overview:
        """Counts by state, oldest pending age, and the health verdict."""
        stats = await self._loop.run(self._storage.stats())
        return Overview(self.target(), stats, await self.health(), await self.relays(), await self.delivery())

    async def delivery(self, now: datetime | None = None) -> Delivery | None:
        """Delivery rate and commit-to-send per minute over the last hour (one bounded read); None when the storage keeps no figures."""
        storage = self._storage
        if not isinstance(storage, IAsyncOutboxRelayFigures):
            return None
        now = now or datetime.now(UTC)
        until = now.replace(second=0, microsecond=0) + DELIVERY_SLOT
        since = until - DELIVERY_PERIOD
        windows = await self._loop.run(storage.relay_figures(since, RELAY_FIGURES_READ_LIMIT))
        return Delivery(
            merge_figures(windows, since, until, DELIVERY_SLOT), len(windows), len(windows) < RELAY_FIGURES_READ_LIMIT
        )

    async def relays(self) -> list[RelayClaims] | None:
        """The relay instances holding live claims now, most held first; None when the storage cannot tell."""
        try:
            return await self._loop.run(self._storage.relay_claims())
        except OutboxRelayClaimsUnsupportedError:
            return None

    async def abandoned(self, limit: int, fingerprint: str | None = None) -> list[OutboxMessage]:
        """Up to ``limit`` abandoned messages, oldest first; of one failure group when given."""
        if fingerprint is None:
            return await self._loop.run(self._storage.list_abandoned(limit))
        window = await self._loop.run(self._storage.list_abandoned(GROUP_WINDOW))
        return [m for m in window if failure_kind(m.last_error).fingerprint == fingerprint][:limit]

    async def failure_groups(self, limit: int) -> FailureGroups:
        """Up to ``limit`` failure groups of the oldest `GROUP_WINDOW` abandoned messages, largest first."""
        stats = await self._loop.run(self._storage.stats())
        window = await self._loop.run(self._storage.list_abandoned(GROUP_WINDOW))
        members: dict[str, list[OutboxMessage]] = {}
        kinds: dict[str, FailureKind] = {}
        for message in window:
            kind = failure_kind(message.last_error)
            kinds.setdefault(kind.fingerprint, kind)
            members.setdefault(kind.fingerprint, []).append(message)
        groups: list[FailureGroup] = []
        for fingerprint, messages in members.items():
            times = [m.abandoned_at for m in messages if m.abandoned_at is not None]
            latest = max(messages, key=lambda m: m.abandoned_at or m.created_at)
            groups.append(
                FailureGroup(
                    kind=kinds[fingerprint],
                    count=len(messages),
                    first_seen=min(times, default=None),
                    last_seen=max(times, default=None),
                    sample_reason=latest.last_error,
                    sample_id=latest.id,
                )
            )
        groups.sort(key=lambda g: (-g.count, g.kind.fingerprint))
        return FailureGroups(groups[:limit], len(window), stats.abandoned)

    async def key_heads(self, limit: int, after: UUID | None = None) -> KeyPage:
        """Up to ``limit`` key heads, oldest first, after the head ``after``.

        Raises:
            OutboxKeyHeadsUnsupportedError: The storage predates `key_heads`.
        """
        heads = await self._loop.run(self._storage.key_heads(limit + 1, after))
        more = len(heads) > limit
        page = heads[:limit]
        return KeyPage(page, after, page[-1].message.id if more and page else None)

    async def message(self, message_id: UUID) -> MessageDetail:
        """One message in any state, payload and headers included, and what holds it.

        Raises:
            ConsoleNotFoundError: No message has that id (never stored, or purged).
            OutboxMessageLookupUnsupportedError: The storage predates `get_message`.
        """
        detail = await self._loop.run(self._storage.get_message(message_id))
        if detail is None:
            raise ConsoleNotFoundError(f"no message {message_id} in this outbox (never stored, or purged)")
        return detail

    async def audit(self, limit: int) -> list[AuditEntry]:
        """Up to ``limit`` audit entries, newest first."""
        return await self._audit.latest(limit)

    async def plan(self, action: ConsoleAction, form: dict[str, list[str]]) -> Plan:
        """The dry run of ``action`` on the scope ``form`` names; changes nothing.

        Raises:
            ConsoleRequestError: The scope is missing or invalid.
        """
        if action is ConsoleAction.PURGE_PUBLISHED:
            before = _cutoff(_one(form, "before"))
            published = (await self._loop.run(self._storage.stats())).published
            return Plan(
                action,
                published,
                f"published before {before.isoformat()} (at most the {published} published now)",
                {"before": before.isoformat()},
            )
        scope = _scope(form)
        if scope is Scope.ALL:
            abandoned = (await self._loop.run(self._storage.stats())).abandoned
            return Plan(action, abandoned, "all abandoned", {"scope": scope.value})
        if scope is Scope.GROUP:
            fingerprint = _one(form, "fingerprint")
            members = await self.abandoned(GROUP_WINDOW, fingerprint)
            return Plan(
                action,
                len(members),
                f"group {fingerprint}",
                {"scope": scope.value, "fingerprint": fingerprint},
            )
        ids = _ids(form.get("id", []))
        if scope is Scope.MESSAGE and len(ids) != 1:
            raise ConsoleRequestError("give exactly one message id")
        window = {m.id for m in await self._loop.run(self._storage.list_abandoned(GROUP_WINDOW))}
        found = sum(1 for i in ids if i in window)
        what = f"message {ids[0]}" if scope is Scope.MESSAGE else f"{len(ids)} selected"
        return Plan(action, found, what, {"scope": scope.value, "id": [str(i) for i in ids]})

    async def execute(self, action: ConsoleAction, plan: Claims, actor: str) -> Outcome:
        """Carry out a confirmed plan (at most `ACTION_BATCH` messages) and record it."""
        storage, run = self._storage, self._loop.run
        if action is ConsoleAction.PURGE_PUBLISHED:
            before = _cutoff(str(plan["before"]))
            affected = await run(storage.purge_published(before, ACTION_BATCH))
            more = affected == ACTION_BATCH
            scope = f"published before {before.isoformat()}"
        else:
            scope_kind = Scope(str(plan["scope"]))
            if scope_kind is Scope.ALL:
                affected = await run(storage.requeue_abandoned(None, ACTION_BATCH))
                more = (await run(storage.stats())).abandoned > 0
                scope = "all abandoned"
            elif scope_kind is Scope.GROUP:
                fingerprint = str(plan["fingerprint"])
                ids = [m.id for m in await self.abandoned(ACTION_BATCH, fingerprint)]
                affected = await run(storage.requeue_abandoned(ids, len(ids))) if ids else 0
                more = bool(await self.abandoned(1, fingerprint))
                scope = f"group {fingerprint}"
            else:
                raw = plan["id"]
                ids = _ids(raw if isinstance(raw, list) else [])
                affected = await run(storage.requeue_abandoned(ids, len(ids)))
                more = False
                scope = f"message {ids[0]}" if scope_kind is Scope.MESSAGE else f"{len(ids)} selected"
        entry = AuditEntry(datetime.now(UTC), actor, action.value, scope, affected)
        audit_logger.info(entry.to_line())
        await self._audit.record(entry)
        return Outcome(entry, more)


def _one(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name, [])
    if len(values) != 1 or not values[0].strip():
        raise ConsoleRequestError(f"give one {name}")
    return values[0].strip()


def _scope(form: dict[str, list[str]]) -> Scope:
    text = _one(form, "scope")
    try:
        return Scope(text)
    except ValueError:
        raise ConsoleRequestError(
            f"scope must be one of {', '.join(s.value for s in Scope)}"
        ) from None
