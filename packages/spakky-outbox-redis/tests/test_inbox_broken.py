"""Broken Redis inboxes fail the inbox rules: the Redis harness's raw checks catch each mistake."""

from collections.abc import Awaitable, Callable
from typing import Any, cast, override

import pytest
from spakky.outbox.ports.inbox import IAsyncInboxStorage, InboxLease, LeaseOutcome
from spakky.outbox.testing import inbox_broken
from spakky.outbox.testing import inbox_conformance as rules
from spakky.outbox.testing.inbox_harness import AbstractInboxHarness
from spakky.plugins.outbox_redis.inbox import AsyncRedisInboxStorage
from spakky.plugins.outbox_redis.pipelines import async_scopes

from .conftest import RedisOutbox
from .inbox_harness import RedisInboxHarness

type Rule = Callable[[AbstractInboxHarness], Awaitable[None]]


class ForgetsCommitted(AsyncRedisInboxStorage):
    """Queues the record without looking for one: every delivery runs."""

    @override
    async def record(self, consumer: str, message_id: str) -> bool:
        _, command = self._record_command(consumer, message_id)
        await cast(Any, self._transaction().execute_command("EVAL", *command))
        return True


class NoWatch(AsyncRedisInboxStorage):
    """Reads the record on another connection and queues it without WATCH: a racing EXEC is not refused."""

    @override
    async def record(self, consumer: str, message_id: str) -> bool:
        pipeline = self._transaction()
        key, command = self._record_command(consumer, message_id)
        if await self._connections.async_client.exists(key):
            return False
        await cast(Any, pipeline.execute_command("EVAL", *command))
        return True


class OutsideTransaction(AsyncRedisInboxStorage):
    """Writes the record at once instead of in the MULTI: it outlives the handler's rollback."""

    @override
    async def record(self, consumer: str, message_id: str) -> bool:
        self._transaction()
        key, command = self._record_command(consumer, message_id)
        client = self._connections.async_client
        if await client.exists(key):
            return False
        await client.execute_command("EVAL", *command)
        return True


class StoredWithoutTransaction(AsyncRedisInboxStorage):
    """Writes the record on its own when no transaction is open, instead of refusing."""

    @override
    async def record(self, consumer: str, message_id: str) -> bool:
        if async_scopes.current() is None:
            _, command = self._record_command(consumer, message_id)
            await self._connections.async_client.execute_command("EVAL", *command)
            return True
        return await super().record(consumer, message_id)


class ConsumersConflated(AsyncRedisInboxStorage):
    """Keys records by the message alone, whichever consumer handled it."""

    @override
    async def record(self, consumer: str, message_id: str) -> bool:
        return await super().record("any", message_id)


class SweepUnbounded(inbox_broken.SweepUnbounded, AsyncRedisInboxStorage):
    """The Redis inbox sweeping every old record at once."""


class LeaseNeverLapses(AsyncRedisInboxStorage):
    """Takes any leased record for busy, lapsed or not."""

    @override
    async def acquire_lease(self, consumer: str, message_id: str, lease_seconds: float) -> InboxLease:
        value = await self._connections.async_client.get(self._keys.record(consumer, message_id))
        if value is not None and b" " in value:
            return InboxLease(LeaseOutcome.BUSY)
        return await super().acquire_lease(consumer, message_id, lease_seconds)


class FinishNotFenced(AsyncRedisInboxStorage):
    """Finishes a lease whoever holds it now."""

    @override
    async def finish_lease(self, consumer: str, message_id: str, token: str) -> bool:
        value = await self._connections.async_client.get(self._keys.record(consumer, message_id))
        holder = value.decode().rsplit(" ", 1)[-1] if value is not None else token
        return await super().finish_lease(consumer, message_id, holder)


class BrokenHarness(RedisInboxHarness):
    """The Redis harness (async flavour) handing out a broken inbox."""

    def __init__(self, outbox: RedisOutbox, broken: type[AsyncRedisInboxStorage]) -> None:
        """A fresh prefix; every inbox is a ``broken`` one."""
        super().__init__(outbox, "async")
        self.broken = broken

    @override
    def inbox(self) -> IAsyncInboxStorage:
        return self.broken(self.outbox.connections, self.outbox.config, self.inbox_config)


BROKEN: list[tuple[type[AsyncRedisInboxStorage], Rule, type[BaseException], str]] = [
    (ForgetsCommitted, rules.test_inbox_duplicate_within_window_expect_skipped, AssertionError, "must be skipped"),
    (NoWatch, rules.test_inbox_racing_instances_expect_effect_once, AssertionError, "racing on one message must run it once"),
    (OutsideTransaction, rules.test_inbox_rolled_back_handler_expect_no_record_and_rerun, AssertionError, "leave no record"),
    (StoredWithoutTransaction, rules.test_inbox_record_outside_transaction_expect_transaction_required, pytest.fail.Exception, "DID NOT RAISE"),
    (ConsumersConflated, rules.test_inbox_consumer_names_expect_independent, AssertionError, "must be independent"),
    (SweepUnbounded, rules.test_inbox_sweep_outside_window_expect_removed_in_bounded_batches, AssertionError, "at most 2 per call"),
    (LeaseNeverLapses, rules.test_inbox_lease_crashed_holder_expect_rerun_after_lease_fenced, AssertionError, "must lapse"),
    (FinishNotFenced, rules.test_inbox_lease_crashed_holder_expect_rerun_after_lease_fenced, AssertionError, "fenced off"),
]


@pytest.mark.parametrize(("broken", "rule", "error", "says"), BROKEN, ids=[b[0].__name__ for b in BROKEN])
async def test_redis_inbox_broken_expect_rule_fails(
    outbox: RedisOutbox,
    broken: type[AsyncRedisInboxStorage],
    rule: Rule,
    error: type[BaseException],
    says: str,
) -> None:
    """Each broken Redis inbox fails the rule it breaks, on raw Redis state."""
    with pytest.raises(error, match=says):
        await rule(BrokenHarness(outbox, broken))
