"""Redis outbox storages: hashes, sorted sets and Lua scripts under one hash tag.

``save`` queues a script on the pipeline of the `@Transactional()` use case,
so the message and the business writes are executed by one MULTI/EXEC. The
relay side (claims, acknowledgements, retries) runs single scripts, each
atomic on the server and costing O(batch · log n). A claim is a lease timed
by Redis ``TIME`` and fenced by the storage instance's owner token: an
instance whose claim expired and was taken over can no longer settle it.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast, override
from uuid import UUID

import redis
import redis.asyncio
from redis.commands.core import AsyncScript, Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import OutboxStats
from spakky.outbox.error import (
    OutboxStorageUnavailableError,
    OutboxTransactionRequiredError,
)
from spakky.outbox.ports.storage import (
    IAsyncOutboxAdministration,
    IAsyncOutboxBatchAcknowledgement,
    IAsyncOutboxRetryScheduling,
    IAsyncOutboxStorage,
    IAsyncOutboxWakeUp,
    IOutboxAdministration,
    IOutboxBatchAcknowledgement,
    IOutboxRetryScheduling,
    IOutboxStorage,
    IOutboxWakeUp,
)
from spakky.plugins.outbox_redis import scripts
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.codec import (
    RedisKeys,
    RedisValue,
    age_seconds,
    pairs_to_mapping,
    save_arguments,
    to_message,
)
from spakky.plugins.outbox_redis.config import RedisOutboxConfig, check_key_prefix
from spakky.plugins.outbox_redis.error import RedisTransactionNotActiveError
from spakky.plugins.outbox_redis.transaction import (
    current_async_pipeline,
    current_pipeline,
)

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)
"""Redis errors that mean the server could not be reached."""

_SCRIPTS: dict[str, str] = {
    "save": scripts.SAVE,
    "fetch": scripts.FETCH,
    "settle": scripts.SETTLE,
    "requeue": scripts.REQUEUE,
    "purge": scripts.PURGE,
    "stats": scripts.STATS,
}


class _Settle:
    """Modes of the settle script."""

    PUBLISH = "publish"
    ABANDON = "abandon"
    INCREMENT = "increment"
    RETRY = "retry"
    RELEASE = "release"


class _RedisOutboxBase:
    """State and argument building shared by the sync and asyncio storages."""

    _keys: RedisKeys
    _owner: str
    _claim_timeout_ms: int
    _retention_ms: int
    _sweep: int
    _connections: RedisOutboxConnectionManager

    def __init__(
        self,
        connections: RedisOutboxConnectionManager,
        config: RedisOutboxConfig,
        outbox_config: OutboxConfig,
    ) -> None:
        self._connections = connections
        self._keys = RedisKeys(check_key_prefix(config.key_prefix))
        self._owner = uuid.uuid4().hex
        self._claim_timeout_ms = max(
            1, round(outbox_config.claim_timeout_seconds * 1000)
        )
        self._retention_ms = max(1, round(config.published_retention_seconds * 1000))
        self._sweep = config.expired_claim_sweep

    @property
    def owner(self) -> str:
        """Token fencing this instance's claims."""
        return self._owner

    def _fetch_args(self, limit: int, max_retry: int) -> list[RedisValue]:
        return [
            self._keys.prefix,
            limit,
            max_retry,
            self._claim_timeout_ms,
            self._owner,
            self._retention_ms,
            self._sweep,
        ]

    def _settle_args(
        self,
        mode: str,
        message_ids: Sequence[UUID],
        *,
        delay_seconds: float = 0.0,
        error: str | None = None,
    ) -> list[RedisValue]:
        return [
            self._keys.prefix,
            self._owner,
            mode,
            self._retention_ms,
            max(0, round(delay_seconds * 1000)),
            "" if error is None else error,
            "0" if error is None else "1",
            *(str(i) for i in message_ids),
        ]

    def _requeue_args(self, message_ids: Sequence[UUID] | None) -> list[RedisValue]:
        if message_ids is None:
            return [self._keys.prefix, "all"]
        return [self._keys.prefix, "ids", *(str(i) for i in message_ids)]

    def _purge_args(self, before: datetime, limit: int) -> list[RedisValue]:
        return [self._keys.prefix, round(before.timestamp() * 1000), limit]

    @staticmethod
    def _messages(reply: Any) -> list[OutboxMessage]:
        rows = cast(list[list[bytes]], reply)
        return [to_message(pairs_to_mapping(row)) for row in rows]

    @staticmethod
    def _stats(reply: Any) -> OutboxStats:
        row = cast(list[Any], reply)
        oldest = cast(bytes | None, row[4])
        return OutboxStats(
            pending=int(row[0]),
            claimed=int(row[1]),
            published=int(row[2]),
            abandoned=int(row[3]),
            oldest_pending_age_seconds=age_seconds(oldest, cast(bytes, row[5])),
        )


@Pod()
class AsyncRedisOutboxStorage(
    _RedisOutboxBase,
    IAsyncOutboxStorage,
    IAsyncOutboxBatchAcknowledgement,
    IAsyncOutboxRetryScheduling,
    IAsyncOutboxWakeUp,
    IAsyncOutboxAdministration,
):
    """Asyncio Redis outbox storage with every optional capability."""

    _scripts: dict[str, AsyncScript] | None

    def __init__(
        self,
        connections: RedisOutboxConnectionManager,
        config: RedisOutboxConfig,
        outbox_config: OutboxConfig,
    ) -> None:
        """Build a storage instance with its own claim owner token."""
        super().__init__(connections, config, outbox_config)
        self._scripts = None

    def _script(self, name: str, client: redis.asyncio.Redis) -> AsyncScript:
        if self._scripts is None:
            self._scripts = {k: client.register_script(v) for k, v in _SCRIPTS.items()}
        return self._scripts[name]

    async def _run(self, name: str, args: Sequence[RedisValue]) -> Any:
        """Run a script on the running loop's client (re-loaded on NOSCRIPT)."""
        client = self._connections.async_client
        try:
            return await self._script(name, client)(
                keys=[self._keys.ready], args=args, client=client
            )
        except _UNAVAILABLE as error:
            raise OutboxStorageUnavailableError(str(error)) from error

    @override
    async def save(self, message: OutboxMessage) -> None:
        """Queue the message on the current transaction's pipeline.

        Raises:
            OutboxTransactionRequiredError: No `AsyncRedisTransaction` is open.
            InvalidOutboxMessageError: A field cannot be stored.
        """
        try:
            pipeline = current_async_pipeline()
        except RedisTransactionNotActiveError:
            raise OutboxTransactionRequiredError(
                "open an AsyncRedisTransaction (or use @Transactional())"
            ) from None
        args = save_arguments(self._keys.prefix, message)
        script = self._script("save", self._connections.async_client)
        await script(keys=[self._keys.ready], args=args, client=pipeline)

    @override
    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        """Claim up to ``limit`` messages, oldest first, for this instance."""
        if limit <= 0:
            return []
        return self._messages(
            await self._run("fetch", self._fetch_args(limit, max_retry))
        )

    @override
    async def mark_published(self, message_id: UUID) -> None:
        """Mark a message this instance holds as published."""
        await self._run("settle", self._settle_args(_Settle.PUBLISH, [message_id]))

    @override
    async def mark_published_many(self, message_ids: Sequence[UUID]) -> None:
        """Mark every message this instance still holds among ``message_ids`` published."""
        if message_ids:
            await self._run("settle", self._settle_args(_Settle.PUBLISH, message_ids))

    @override
    async def increment_retry(self, message_id: UUID) -> None:
        """Spend one retry; the claim stays until it expires."""
        await self._run("settle", self._settle_args(_Settle.INCREMENT, [message_id]))

    @override
    async def mark_abandoned(self, message_id: UUID) -> None:
        """Abandon the message; it stays readable and unblocks its key."""
        await self._run("settle", self._settle_args(_Settle.ABANDON, [message_id]))

    @override
    async def schedule_retry(
        self, message_id: UUID, delay_seconds: float, error: str
    ) -> None:
        """Spend one retry, keep ``error``, and re-offer the message after the delay."""
        await self._run(
            "settle",
            self._settle_args(
                _Settle.RETRY, [message_id], delay_seconds=delay_seconds, error=error
            ),
        )

    @override
    async def abandon(self, message_id: UUID, error: str) -> None:
        """Abandon the message, keeping ``error`` as the reason."""
        await self._run(
            "settle", self._settle_args(_Settle.ABANDON, [message_id], error=error)
        )

    @override
    async def release(self, message_ids: Sequence[UUID]) -> None:
        """Give up this instance's claims without spending retry budget."""
        if message_ids:
            await self._run("settle", self._settle_args(_Settle.RELEASE, message_ids))

    @override
    async def wait_for_messages(self, timeout: float) -> bool:
        """Block on the wake-up marker (BZPOPMIN) for up to ``timeout`` seconds."""
        client = self._connections.async_client
        try:
            if timeout <= 0:
                popped: Any = await client.zpopmin(self._keys.marker)
                return bool(popped)
            popped = await client.bzpopmin(self._keys.marker, timeout)
        except _UNAVAILABLE as error:
            raise OutboxStorageUnavailableError(str(error)) from error
        return popped is not None

    @override
    async def stats(self) -> OutboxStats:
        """Count messages by state and measure the oldest pending one."""
        return self._stats(
            await self._run("stats", [self._keys.prefix, self._retention_ms])
        )

    @override
    async def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        """Return up to ``limit`` abandoned messages, oldest first, with their last error."""
        if limit <= 0:
            return []
        client = self._connections.async_client
        try:
            ids = cast(list[bytes], await client.zrange(self._keys.dead, 0, limit - 1))
            pipeline = client.pipeline(transaction=False)
            for message_id in ids:
                pipeline.hgetall(self._keys.message(message_id.decode()))
            rows = cast(list[dict[bytes, bytes]], await pipeline.execute())
        except _UNAVAILABLE as error:
            raise OutboxStorageUnavailableError(str(error)) from error
        return [to_message(row) for row in rows if row]

    @override
    async def requeue_abandoned(self, message_ids: Sequence[UUID] | None = None) -> int:
        """Make abandoned messages pending again with a fresh budget; None means all."""
        return int(await self._run("requeue", self._requeue_args(message_ids)))

    @override
    async def purge_published(self, before: datetime, limit: int = 10_000) -> int:
        """Delete up to ``limit`` messages published before ``before``."""
        if limit <= 0:
            return 0
        return int(await self._run("purge", self._purge_args(before, limit)))


@Pod()
class RedisOutboxStorage(
    _RedisOutboxBase,
    IOutboxStorage,
    IOutboxBatchAcknowledgement,
    IOutboxRetryScheduling,
    IOutboxWakeUp,
    IOutboxAdministration,
):
    """Synchronous Redis outbox storage with every optional capability."""

    _scripts: dict[str, Script] | None

    def __init__(
        self,
        connections: RedisOutboxConnectionManager,
        config: RedisOutboxConfig,
        outbox_config: OutboxConfig,
    ) -> None:
        """Build a storage instance with its own claim owner token."""
        super().__init__(connections, config, outbox_config)
        self._scripts = None

    def _script(self, name: str, client: redis.Redis) -> Script:
        if self._scripts is None:
            self._scripts = {k: client.register_script(v) for k, v in _SCRIPTS.items()}
        return self._scripts[name]

    def _run(self, name: str, args: Sequence[RedisValue]) -> Any:
        """Run a script on the shared client (re-loaded on NOSCRIPT)."""
        client = self._connections.client
        try:
            return self._script(name, client)(
                keys=[self._keys.ready], args=args, client=client
            )
        except _UNAVAILABLE as error:
            raise OutboxStorageUnavailableError(str(error)) from error

    @override
    def save(self, message: OutboxMessage) -> None:
        """Queue the message on the current transaction's pipeline.

        Raises:
            OutboxTransactionRequiredError: No `RedisTransaction` is open.
            InvalidOutboxMessageError: A field cannot be stored.
        """
        try:
            pipeline = current_pipeline()
        except RedisTransactionNotActiveError:
            raise OutboxTransactionRequiredError(
                "open a RedisTransaction (or use @Transactional())"
            ) from None
        args = save_arguments(self._keys.prefix, message)
        script = self._script("save", self._connections.client)
        script(keys=[self._keys.ready], args=args, client=pipeline)

    @override
    def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        """Claim up to ``limit`` messages, oldest first, for this instance."""
        if limit <= 0:
            return []
        return self._messages(self._run("fetch", self._fetch_args(limit, max_retry)))

    @override
    def mark_published(self, message_id: UUID) -> None:
        """Mark a message this instance holds as published."""
        self._run("settle", self._settle_args(_Settle.PUBLISH, [message_id]))

    @override
    def mark_published_many(self, message_ids: Sequence[UUID]) -> None:
        """Mark every message this instance still holds among ``message_ids`` published."""
        if message_ids:
            self._run("settle", self._settle_args(_Settle.PUBLISH, message_ids))

    @override
    def increment_retry(self, message_id: UUID) -> None:
        """Spend one retry; the claim stays until it expires."""
        self._run("settle", self._settle_args(_Settle.INCREMENT, [message_id]))

    @override
    def mark_abandoned(self, message_id: UUID) -> None:
        """Abandon the message; it stays readable and unblocks its key."""
        self._run("settle", self._settle_args(_Settle.ABANDON, [message_id]))

    @override
    def schedule_retry(
        self, message_id: UUID, delay_seconds: float, error: str
    ) -> None:
        """Spend one retry, keep ``error``, and re-offer the message after the delay."""
        self._run(
            "settle",
            self._settle_args(
                _Settle.RETRY, [message_id], delay_seconds=delay_seconds, error=error
            ),
        )

    @override
    def abandon(self, message_id: UUID, error: str) -> None:
        """Abandon the message, keeping ``error`` as the reason."""
        self._run(
            "settle", self._settle_args(_Settle.ABANDON, [message_id], error=error)
        )

    @override
    def release(self, message_ids: Sequence[UUID]) -> None:
        """Give up this instance's claims without spending retry budget."""
        if message_ids:
            self._run("settle", self._settle_args(_Settle.RELEASE, message_ids))

    @override
    def wait_for_messages(self, timeout: float) -> bool:
        """Block on the wake-up marker (BZPOPMIN) for up to ``timeout`` seconds."""
        client = self._connections.client
        try:
            if timeout <= 0:
                return bool(client.zpopmin(self._keys.marker))
            popped: Any = client.bzpopmin(self._keys.marker, timeout)
        except _UNAVAILABLE as error:
            raise OutboxStorageUnavailableError(str(error)) from error
        return popped is not None

    @override
    def stats(self) -> OutboxStats:
        """Count messages by state and measure the oldest pending one."""
        return self._stats(self._run("stats", [self._keys.prefix, self._retention_ms]))

    @override
    def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        """Return up to ``limit`` abandoned messages, oldest first, with their last error."""
        if limit <= 0:
            return []
        client = self._connections.client
        try:
            ids = cast(list[bytes], client.zrange(self._keys.dead, 0, limit - 1))
            pipeline = client.pipeline(transaction=False)
            for message_id in ids:
                pipeline.hgetall(self._keys.message(message_id.decode()))
            rows = cast(list[dict[bytes, bytes]], pipeline.execute())
        except _UNAVAILABLE as error:
            raise OutboxStorageUnavailableError(str(error)) from error
        return [to_message(row) for row in rows if row]

    @override
    def requeue_abandoned(self, message_ids: Sequence[UUID] | None = None) -> int:
        """Make abandoned messages pending again with a fresh budget; None means all."""
        return int(self._run("requeue", self._requeue_args(message_ids)))

    @override
    def purge_published(self, before: datetime, limit: int = 10_000) -> int:
        """Delete up to ``limit`` messages published before ``before``."""
        if limit <= 0:
            return 0
        return int(self._run("purge", self._purge_args(before, limit)))
