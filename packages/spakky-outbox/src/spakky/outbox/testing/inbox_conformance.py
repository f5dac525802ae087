"""Inbox conformance rules: what every inbox storage must do, checked on raw state.

A backend's ``conftest.py`` provides an ``inbox_harness`` fixture yielding an
`AbstractInboxHarness`; its test module is::

    from spakky.outbox.testing.inbox_conformance import *  # noqa: F403

Each assertion names the rule it checks.
"""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from spakky.outbox.error import OutboxTransactionRequiredError
from spakky.outbox.inbox.error import InboxConflictError
from spakky.outbox.ports.inbox import (
    IAsyncInboxStorage,
    InboxLease,
    InboxStats,
    LeaseOutcome,
)
from spakky.outbox.testing.inbox_harness import AbstractInboxHarness, RawInboxRecord

__all__ = [
    "test_inbox_consumer_names_expect_independent",
    "test_inbox_duplicate_within_window_expect_skipped",
    "test_inbox_lease_crashed_holder_expect_rerun_after_lease_fenced",
    "test_inbox_lease_finished_expect_never_rerun",
    "test_inbox_racing_instances_expect_effect_once",
    "test_inbox_record_outside_transaction_expect_transaction_required",
    "test_inbox_rolled_back_handler_expect_no_record_and_rerun",
    "test_inbox_sweep_outside_window_expect_removed_in_bounded_batches",
]

WINDOW = timedelta(days=1)
"""The dedup window the sweep rule uses; records are backdated far past it."""


async def test_inbox_duplicate_within_window_expect_skipped(inbox_harness: AbstractInboxHarness) -> None:
    """Rule: a message recorded within the window is a duplicate: record says False, no second effect."""
    inbox = inbox_harness.inbox()
    first = await inbox_harness.handle(inbox, "c", "m1", "e1")
    again = await inbox_harness.handle(inbox_harness.inbox(), "c", "m1", "e1-again")
    assert (first, again) == (True, False), f"duplicate within the window must be skipped: record said {first}, {again}"
    effects = await inbox_harness.effects()
    assert effects == ["e1"], f"duplicate within the window must be skipped: effects {effects}"
    records = await inbox_harness.records()
    assert records == [RawInboxRecord("c", "m1", False)], f"one record per (consumer, message): {records}"


async def test_inbox_rolled_back_handler_expect_no_record_and_rerun(inbox_harness: AbstractInboxHarness) -> None:
    """Rule: a rolled-back handler leaves no record, so the redelivery runs it."""
    inbox = inbox_harness.inbox()
    await inbox_harness.handle(inbox, "c", "m1", "lost", fail=True)
    records = await inbox_harness.records()
    assert records == [], f"a rolled-back handler must leave no record: {records}"
    ran = await inbox_harness.handle(inbox, "c", "m1", "e1")
    effects = await inbox_harness.effects()
    assert ran and effects == ["e1"], f"the redelivery after a rollback must run: ran {ran}, effects {effects}"


async def test_inbox_racing_instances_expect_effect_once(inbox_harness: AbstractInboxHarness) -> None:
    """Rule: two instances racing on one message run it once; the loser skips or fails its commit.

    The first holds its transaction open (record and effect written) until the
    second has entered ``record``; then both finish.
    """
    holding, entered = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        holding.set()
        await entered.wait()

    class Entering(IAsyncInboxStorage):
        """The second instance, telling when its ``record`` starts."""

        def __init__(self, inner: IAsyncInboxStorage) -> None:
            self._inner = inner

        async def record(self, consumer: str, message_id: str) -> bool:
            entered.set()
            return await self._inner.record(consumer, message_id)

        async def acquire_lease(self, consumer: str, message_id: str, lease_seconds: float) -> InboxLease:
            return await self._inner.acquire_lease(consumer, message_id, lease_seconds)

        async def finish_lease(self, consumer: str, message_id: str, token: str) -> bool:
            return await self._inner.finish_lease(consumer, message_id, token)

        async def release_lease(self, consumer: str, message_id: str, token: str) -> None:
            await self._inner.release_lease(consumer, message_id, token)

        async def purge(self, before: datetime, limit: int = 10_000) -> int:
            return await self._inner.purge(before, limit)

        async def stats(self) -> InboxStats:
            return await self._inner.stats()

        def location(self) -> str:
            return self._inner.location()

    first = asyncio.create_task(inbox_harness.handle(inbox_harness.inbox(), "c", "m1", "first", before_commit=hold))
    await asyncio.wait_for(holding.wait(), 10)
    second = asyncio.create_task(inbox_harness.handle(Entering(inbox_harness.inbox()), "c", "m1", "second"))
    outcomes = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 30)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, InboxConflictError):
            raise outcome
    effects = await inbox_harness.effects()
    assert len(effects) == 1, f"two instances racing on one message must run it once: effects {effects}, outcomes {outcomes}"
    records = await inbox_harness.records()
    assert len(records) == 1, f"one record per (consumer, message) after a race: {records}"


async def test_inbox_consumer_names_expect_independent(inbox_harness: AbstractInboxHarness) -> None:
    """Rule: different consumer names are independent; one consumer's message ids are distinct."""
    inbox = inbox_harness.inbox()
    ran = [
        await inbox_harness.handle(inbox, "billing", "m1", "b1"),
        await inbox_harness.handle(inbox, "shipping", "m1", "s1"),
        await inbox_harness.handle(inbox, "shipping", "m2", "s2"),
    ]
    assert ran == [True, True, True], f"different consumer names must be independent: record said {ran}"
    effects = await inbox_harness.effects()
    assert effects == ["b1", "s1", "s2"], f"different consumer names must be independent: effects {effects}"


async def test_inbox_sweep_outside_window_expect_removed_in_bounded_batches(inbox_harness: AbstractInboxHarness) -> None:
    """Rule: records outside the window are swept, at most ``limit`` per call; records inside stay."""
    inbox = inbox_harness.inbox()
    for n in range(5):
        await inbox_harness.handle(inbox, "c", f"m{n}", f"e{n}")
    for n in range(3):
        await inbox_harness.backdate("c", f"m{n}", 3 * WINDOW.total_seconds())
    before = datetime.now(UTC) - WINDOW
    swept = [await inbox.purge(before, limit=2) for _ in range(3)]
    left = [r.message_id for r in await inbox_harness.records()]
    assert sorted(left) == ["m3", "m4"], f"records inside the window must stay, outside be swept: left {left}"
    assert swept == [2, 1, 0], f"the sweep must delete at most 2 per call, then stop: {swept}"


async def test_inbox_lease_crashed_holder_expect_rerun_after_lease_fenced(inbox_harness: AbstractInboxHarness) -> None:
    """Rule (lease mode): a holder that crashed is taken over once its lease lapses, and is fenced off."""
    crashed, other = inbox_harness.inbox(), inbox_harness.inbox()
    lease = await crashed.acquire_lease("c", "m1", inbox_harness.lease_seconds)
    assert lease.outcome is LeaseOutcome.ACQUIRED and lease.token, f"a new message must be leased: {lease}"
    busy = await other.acquire_lease("c", "m1", 30)
    assert busy.outcome is LeaseOutcome.BUSY, f"a live lease must keep others out: {busy}"
    records = await inbox_harness.records()
    assert records == [RawInboxRecord("c", "m1", True)], f"a leased record is stored at once, marked leased: {records}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + inbox_harness.lease_seconds + 15
    while (taken := await other.acquire_lease("c", "m1", 30)).outcome is LeaseOutcome.BUSY:
        assert loop.time() < deadline, "a crashed holder's lease must lapse so the message runs again"
        await asyncio.sleep(0.05)
    assert taken.outcome is LeaseOutcome.ACQUIRED and taken.token, f"a lapsed lease must be taken over: {taken}"
    late = await crashed.finish_lease("c", "m1", lease.token)
    assert late is False, "a holder whose lease was taken over must be fenced off"
    assert await other.finish_lease("c", "m1", taken.token), "the new holder must finish"


async def test_inbox_lease_finished_expect_never_rerun(inbox_harness: AbstractInboxHarness) -> None:
    """Rule (lease mode): a finished message is never run again; a released one runs at once."""
    inbox = inbox_harness.inbox()
    lease = await inbox.acquire_lease("c", "m1", inbox_harness.lease_seconds)
    assert lease.token and await inbox.finish_lease("c", "m1", lease.token), "a held lease must finish"
    records = await inbox_harness.records()
    assert records == [RawInboxRecord("c", "m1", False)], f"a finished record holds no lease: {records}"
    again = await inbox_harness.inbox().acquire_lease("c", "m1", inbox_harness.lease_seconds)
    assert again.outcome is LeaseOutcome.DONE, f"a finished message must never run again: {again}"
    failed = await inbox.acquire_lease("c", "m2", 30)
    assert failed.token is not None
    await inbox.release_lease("c", "m2", failed.token)
    rerun = await inbox_harness.inbox().acquire_lease("c", "m2", 30)
    assert rerun.outcome is LeaseOutcome.ACQUIRED, f"a released message must run again at once: {rerun}"


async def test_inbox_record_outside_transaction_expect_transaction_required(inbox_harness: AbstractInboxHarness) -> None:
    """Rule: ``record`` outside a transaction fails with our error, recording nothing."""
    with pytest.raises(OutboxTransactionRequiredError):
        await inbox_harness.inbox().record("c", "m1")
    records = await inbox_harness.records()
    assert records == [], f"a record outside a transaction must not be stored: {records}"
