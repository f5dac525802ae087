"""Key spaces: partition keys and business names never reach another outbox's keys or this one's."""

import uuid
from collections.abc import AsyncIterator

import pytest
from spakky.plugins.outbox_redis.transaction import (
    AsyncRedisTransaction,
    current_async_pipeline,
)

from .conftest import (
    RedisOutbox,
    assert_claimed_and_published,
    drop_outbox,
    make_outbox,
    new_message,
)

MAX_RETRY = 5

HOSTILE_NAMES = [
    "ready",
    "seq",
    "pending",
    "x:ready",
    "x:seq",
    "_outbox:pending",
    "_outbox:seq",
    ":_outbox:free",
    "key:x:ready",
    "*",
]
"""Partition keys and business names spelled like keys the outbox (or an 8.5-style layout) uses."""



@pytest.fixture
async def nested(redis_url: str) -> AsyncIterator[tuple[RedisOutbox, RedisOutbox]]:
    """Two outboxes whose prefixes nest: ``{t}`` and ``{t}:key:x`` (same slot)."""
    outer_prefix = f"{{nest-{uuid.uuid4().hex}}}"
    outer = make_outbox(redis_url, outer_prefix)
    inner = make_outbox(redis_url, f"{outer_prefix}:key:x")
    try:
        yield outer, inner
    finally:
        await drop_outbox(inner)
        await drop_outbox(outer)


async def test_partition_keys_spelling_other_outbox_keys_expect_outboxes_apart(
    nested: tuple[RedisOutbox, RedisOutbox],
) -> None:
    """Messages keyed like the inner outbox's keys stay in the outer outbox, and the other way round."""
    outer, inner = nested
    outer_sent = [new_message(name) for name in HOSTILE_NAMES]
    inner_sent = [new_message(), new_message("ready")]
    for outbox, messages in ((outer, outer_sent), (inner, inner_sent)):
        storage = outbox.storage()
        async with AsyncRedisTransaction(outbox.config, outbox.connections):
            for message in messages:
                await storage.save(message)
    inner_claimed = await inner.storage().fetch_pending(100, MAX_RETRY)
    outer_claimed = await outer.storage().fetch_pending(100, MAX_RETRY)
    assert {m.id for m in inner_claimed} == {m.id for m in inner_sent}
    assert {m.id for m in outer_claimed} == {m.id for m in outer_sent}
    assert (await inner.storage().stats()).pending == len(inner_sent)
    assert (await outer.storage().stats()).pending == len(outer_sent)


async def test_business_keys_named_like_outbox_keys_expect_both_intact(
    outbox: RedisOutbox,
) -> None:
    """Business keys from `RedisKeys.business` never overwrite the outbox's own keys."""
    sent = new_message("k")
    names = [*HOSTILE_NAMES, f"_outbox:msg:{sent.id}", f"msg:{sent.id}"]
    storage = outbox.storage()
    async with AsyncRedisTransaction(outbox.config, outbox.connections):
        pipe = current_async_pipeline()
        for name in names:
            await pipe.set(outbox.keys.business(name), name)
        await storage.save(sent)
    for name in names:
        assert await outbox.raw.get(outbox.keys.business(name)) == name.encode()
    await assert_claimed_and_published(storage, await storage.fetch_pending(10, MAX_RETRY), sent)


async def test_outbox_keys_expect_every_key_under_the_outbox_segment(
    outbox: RedisOutbox,
) -> None:
    """Whatever the partition keys, every key the outbox writes starts with ``<prefix>:_outbox:``."""
    storage = outbox.storage()
    async with AsyncRedisTransaction(outbox.config, outbox.connections):
        for name in HOSTILE_NAMES:
            await storage.save(new_message(name))
    claimed = await storage.fetch_pending(100, MAX_RETRY)
    await storage.mark_published(claimed[0].id)
    await storage.abandon(claimed[1].id, "poison")
    keys = [k.decode() async for k in outbox.raw.scan_iter(match=f"{outbox.prefix}*")]
    assert keys and all(k.startswith(f"{outbox.prefix}:_outbox:") for k in keys)
