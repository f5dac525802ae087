"""Tests of the Redis transactions and the pipeline accessors."""

import asyncio
from contextlib import nullcontext
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from spakky.data.aspects.transactional import (
    AsyncTransactionalAspect,
    TransactionalAspect,
)
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.error import (
    InvalidOutboxMessageError,
    OutboxTransactionRequiredError,
)
from spakky.plugins.outbox_redis.error import RedisTransactionNotActiveError
from spakky.plugins.outbox_redis.transaction import (
    AsyncRedisTransaction,
    RedisTransaction,
    current_async_pipeline,
    current_pipeline,
)

from .conftest import RedisOutbox


class _BusinessFailureError(Exception):
    """A failure raised by a use case to force a rollback."""


def _message(key: str | None = None) -> OutboxMessage:
    return OutboxMessage(
        id=uuid4(),
        event_name="OrderPlaced",
        payload=b"{}",
        headers={"h": "v"},
        created_at=datetime.now(UTC),
        partition_key=key,
    )


async def _message_count(outbox: RedisOutbox) -> int:
    return len([k async for k in outbox.raw.scan_iter(match=outbox.keys.message("*"))])


def test_current_async_pipeline_outside_transaction_expect_error() -> None:
    """Asking for the asyncio pipeline with no transaction open raises our error."""
    with pytest.raises(RedisTransactionNotActiveError):
        current_async_pipeline()


def test_current_pipeline_outside_transaction_expect_error() -> None:
    """Asking for the sync pipeline with no transaction open raises our error."""
    with pytest.raises(RedisTransactionNotActiveError):
        current_pipeline()


async def test_save_outside_transaction_expect_transaction_required(
    outbox: RedisOutbox,
) -> None:
    """``save`` outside a transaction refuses with the core's error and writes nothing."""
    with pytest.raises(OutboxTransactionRequiredError):
        await outbox.storage().save(_message())
    with pytest.raises(OutboxTransactionRequiredError):
        outbox.sync_storage().save(_message())
    assert await _message_count(outbox) == 0


@pytest.mark.parametrize("fails", [False, True], ids=["commit", "rollback"])
async def test_transactional_aspect_use_case_expect_business_and_message_kept_together(
    outbox: RedisOutbox, fails: bool
) -> None:
    """Through ``@Transactional()``'s aspect a business write and a save commit together; a failing use case leaves neither."""
    aspect = AsyncTransactionalAspect(
        AsyncRedisTransaction(outbox.config, outbox.connections)
    )
    storage = outbox.storage()

    async def use_case() -> str:
        await current_async_pipeline().set(outbox.keys.business("order:1"), "placed")
        await storage.save(_message("order-1"))
        if fails:
            raise _BusinessFailureError
        return "done"

    if fails:
        with pytest.raises(_BusinessFailureError):
            await aspect.around_async(use_case)
    else:
        assert await aspect.around_async(use_case) == "done"
    assert await outbox.raw.get(outbox.keys.business("order:1")) == (None if fails else b"placed")
    assert await _message_count(outbox) == (0 if fails else 1)
    with pytest.raises(RedisTransactionNotActiveError):
        current_async_pipeline()


async def test_sync_transactional_aspect_rollback_expect_nothing_written(
    outbox: RedisOutbox,
) -> None:
    """The sync aspect over `RedisTransaction` discards everything on failure."""
    aspect = TransactionalAspect(RedisTransaction(outbox.config, outbox.connections))
    storage = outbox.sync_storage()

    def failing() -> None:
        current_pipeline().set(outbox.keys.business("order:3"), "placed")
        storage.save(_message())
        raise _BusinessFailureError

    def succeeding() -> None:
        current_pipeline().set(outbox.keys.business("order:4"), "placed")
        storage.save(_message())

    with pytest.raises(_BusinessFailureError):
        await asyncio.to_thread(aspect.around, failing)
    await asyncio.to_thread(aspect.around, succeeding)
    assert await outbox.raw.exists(outbox.keys.business("order:3")) == 0
    assert await outbox.raw.exists(outbox.keys.business("order:4")) == 1
    assert await _message_count(outbox) == 1


@pytest.mark.parametrize("inner_fails", [False, True], ids=["inner_commits", "inner_fails"])
async def test_nested_transaction_expect_outer_executes_once(
    outbox: RedisOutbox, inner_fails: bool
) -> None:
    """An inner transaction joins the outer one, nothing is sent before the outer commit; an inner rollback dooms the outer even if the error is swallowed."""
    transaction = outbox.transaction()
    key = outbox.keys.business("nested")
    async with transaction:
        outer = current_async_pipeline()
        await outer.set(key, "outer")
        with pytest.raises(_BusinessFailureError) if inner_fails else nullcontext():
            async with transaction:
                assert current_async_pipeline() is outer
                await outer.set(key, "inner")
                if inner_fails:
                    raise _BusinessFailureError
        assert await outbox.raw.exists(key) == 0
    assert await outbox.raw.get(key) == (None if inner_fails else b"inner")


async def test_concurrent_transactions_expect_separate_pipelines(
    outbox: RedisOutbox,
) -> None:
    """Two tasks using one transaction Pod each get their own pipeline."""
    transaction = AsyncRedisTransaction(outbox.config, outbox.connections)
    ready = asyncio.Event()

    async def run(name: str, fail: bool) -> None:
        try:
            async with transaction:
                await current_async_pipeline().set(outbox.keys.business(name), name)
                if fail:
                    ready.set()
                    raise _BusinessFailureError
                await ready.wait()
        except _BusinessFailureError:
            pass

    await asyncio.gather(run("kept", False), run("dropped", True))
    assert await outbox.raw.exists(outbox.keys.business("kept")) == 1
    assert await outbox.raw.exists(outbox.keys.business("dropped")) == 0


async def test_save_invalid_message_expect_error_before_queueing(
    outbox: RedisOutbox,
) -> None:
    """A malformed message is refused in Python, before anything is queued in MULTI."""
    bad = OutboxMessage(
        id=uuid4(),
        event_name="X",
        payload="not bytes",  # pyright: ignore[reportArgumentType]
        headers={},
        created_at=datetime.now(UTC),
    )
    storage = outbox.storage()
    async with AsyncRedisTransaction(outbox.config, outbox.connections):
        with pytest.raises(InvalidOutboxMessageError):
            await storage.save(bad)
        assert len(current_async_pipeline().command_stack) == 0
