"""The inbox harness of the Redis package: both flavours on one outbox prefix, raw state read by key."""

import asyncio
from typing import override

from spakky.outbox.inbox.config import InboxConfig
from spakky.outbox.ports.inbox import IAsyncInboxStorage
from spakky.outbox.testing.inbox_harness import (
    AbstractInboxHarness,
    HandlerCall,
    RawInboxRecord,
    ThreadedInbox,
)
from spakky.plugins.outbox_redis.inbox_base import InboxKeys
from spakky.plugins.outbox_redis.transaction import (
    current_async_pipeline,
    current_pipeline,
)

from .conftest import RedisOutbox


class RedisInboxHarness(AbstractInboxHarness):
    """A Redis inbox under a private prefix; effects are pushed on a business list in the same MULTI/EXEC."""

    lease_seconds = 0.5

    def __init__(self, outbox: RedisOutbox, flavour: str, inbox_config: InboxConfig | None = None) -> None:
        """Use ``outbox``'s prefix and clients; ``flavour`` is ``async`` or ``sync``."""
        self.outbox = outbox
        self.flavour = flavour
        self.name = f"redis {flavour}"
        self.inbox_config = inbox_config or InboxConfig()
        self.keys = InboxKeys(outbox.prefix)
        self.effects_key = outbox.keys.business("effects")

    @override
    def inbox(self) -> IAsyncInboxStorage:
        outbox = self.outbox
        if self.flavour == "async":
            return outbox.inbox(self.inbox_config)
        return ThreadedInbox(outbox.sync_inbox(self.inbox_config))

    @override
    async def run_handler(self, call: HandlerCall) -> bool:
        return await (self._async(call) if self.flavour == "async" else self._sync(call))

    async def _async(self, call: HandlerCall) -> bool:
        transaction = self.outbox.transaction()
        await transaction.initialize()
        try:
            ran = await call.record()
            if ran:
                await current_async_pipeline().rpush(self.effects_key, call.effect)
            await call.reach_commit()
            if call.fail:
                await transaction.rollback()
            else:
                await transaction.commit()
            return ran
        finally:
            await transaction.dispose()

    async def _sync(self, call: HandlerCall) -> bool:
        # The sync transaction lives in this task's context; record and commit
        # run in worker threads, which copy the context (and so see its
        # pipeline); dispose unbinds it, so it runs here.
        transaction = self.outbox.sync_transaction()
        transaction.initialize()
        try:
            ran = await call.record()
            if ran:
                current_pipeline().rpush(self.effects_key, call.effect)
            await call.reach_commit()
            await asyncio.to_thread(transaction.rollback if call.fail else transaction.commit)
            return ran
        finally:
            transaction.dispose()

    @override
    async def records(self) -> list[RawInboxRecord]:
        raw = self.outbox.raw
        start = self.keys.records
        found: list[RawInboxRecord] = []
        async for key in raw.scan_iter(match=f"{start}*", count=1000):
            value = await raw.get(key)
            if value is None:
                continue
            consumer, message_id = InboxKeys.split(key.decode()[len(start) :])
            found.append(RawInboxRecord(consumer, message_id, leased=b" " in value))
        return sorted(found, key=lambda r: (r.consumer, r.message_id))

    @override
    async def effects(self) -> list[str]:
        return sorted(v.decode() for v in await self.outbox.raw.lrange(self.effects_key, 0, -1))

    @override
    async def backdate(self, consumer: str, message_id: str, seconds: float) -> None:
        raw, keys = self.outbox.raw, self.keys
        key, member = keys.record(consumer, message_id), keys.member(consumer, message_id)
        value = (await raw.get(key) or b"").decode()
        recorded, _, rest = value.partition(" ")
        moved = int(recorded) - round(seconds * 1000)
        await raw.set(key, f"{moved} {rest}" if rest else str(moved), keepttl=True)
        await raw.zadd(keys.recorded, {member: moved}, xx=True)
        await raw.zadd(keys.leased, {member: moved}, xx=True)
