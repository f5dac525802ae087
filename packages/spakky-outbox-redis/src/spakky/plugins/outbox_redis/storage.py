"""Redis outbox storages: hashes, sorted sets and Lua scripts under one hash tag.

``save`` queues a script on the pipeline of the `@Transactional()` use case,
so the message and the business writes are executed by one MULTI/EXEC. The
relay side (claims, renewals, acknowledgements, retries, administration) runs
single scripts, each atomic on the server and costing O(batch · log n). A
claim is a lease timed by Redis ``TIME`` and fenced by the storage instance's
owner token: an instance whose claim lapsed and was swept or taken over can no
longer settle or renew it.
"""

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, cast, override
from uuid import UUID

from redis.commands.core import AsyncScript, Script
from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.common.claims import key_run, undecodable_reason
from spakky.outbox.common.config import OutboxConfig, redact_url
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import OutboxStats, OutboxTarget
from spakky.outbox.error import (
    OutboxStorageUnavailableError,
    OutboxTransactionRequiredError,
)
from spakky.outbox.ports.storage import (
    IAsyncOutboxAdministration,
    IAsyncOutboxBatchAcknowledgement,
    IAsyncOutboxLiveness,
    IAsyncOutboxRetryScheduling,
    IAsyncOutboxStorage,
    IAsyncOutboxWakeUp,
    IOutboxAdministration,
    IOutboxBatchAcknowledgement,
    IOutboxLiveness,
    IOutboxRetryScheduling,
    IOutboxStorage,
    IOutboxWakeUp,
)
from spakky.plugins.outbox_redis import scripts
from spakky.plugins.outbox_redis.client import (
    AsyncRedisClient,
    RedisOutboxConnectionManager,
    SyncRedisClient,
)
from spakky.plugins.outbox_redis.codec import (
    MESSAGE_FIELDS,
    RedisKeys,
    RedisValue,
    age_seconds,
    save_arguments,
    to_message,
    unframe,
)
from spakky.plugins.outbox_redis.config import (
    KEY_PREFIX_VARIABLE,
    SPAKKY_OUTBOX_REDIS_CONFIG_ENV_PREFIX,
    RedisOutboxConfig,
    check_key_prefix,
)
from spakky.plugins.outbox_redis.error import RedisTransactionNotActiveError
from spakky.plugins.outbox_redis.transaction import (
    current_async_pipeline,
    current_pipeline,
)

STORAGE_BACKEND = "redis"
"""Backend name in `OutboxTarget`."""

_UNAVAILABLE = (
    RedisConnectionError,  # includes BusyLoadingError: a restarted server loading its data
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
    ReadOnlyError,  # a replica promoted a moment ago, or a primary demoted
)
"""Redis errors that mean the server (or the slot's node) cannot serve now."""

_SCRIPTS: dict[str, str] = {
    "fetch": scripts.FETCH,
    "settle": scripts.SETTLE,
    "renew": scripts.RENEW,
    "requeue": scripts.REQUEUE,
    "purge": scripts.PURGE,
    "stats": scripts.STATS,
    "abandoned": scripts.LIST_ABANDONED,
}

_WIDTH = 1 + len(MESSAGE_FIELDS)
"""Framed items per message: its id, then its fields."""


class _Settle:
    """Modes of the settle script."""

    PUBLISH = "publish"
    ABANDON = "abandon"
    INCREMENT = "increment"
    RETRY = "retry"
    RELEASE = "release"


_REQUEUE_CHUNK = 200
"""Most abandoned messages one requeue script moves (a few ms of server time)."""
_PURGE_CHUNK = 1000
"""Most published messages one purge script deletes (a few ms of server time)."""

type _Step = tuple[list[RedisValue], int | None]
"""One administration script call: its ARGV, and the count below which the oldest-first walk is over
(None: the call works on named ids, and the next chunk follows regardless)."""


def _steps(limit: int, chunk: int) -> Iterator[int]:
    """Split ``limit`` into script-sized steps: a call of any size holds the server milliseconds at a time."""
    while limit > 0:
        yield min(chunk, limit)
        limit -= chunk


def _joined(message_ids: Sequence[UUID | bytes]) -> str:
    """Ids as the scripts take them: one comma-separated argument."""
    return ",".join(i.decode() if isinstance(i, bytes) else str(i) for i in message_ids)


class _RedisOutboxBase:
    """State, arguments and reply decoding shared by the sync and asyncio storages."""

    _keys: RedisKeys
    _owner: str
    _claim_timeout_ms: int
    _lease_ms: int
    _sweep: int
    _config: RedisOutboxConfig
    _connections: RedisOutboxConnectionManager

    def __init__(
        self,
        connections: RedisOutboxConnectionManager,
        config: RedisOutboxConfig,
        outbox_config: OutboxConfig,
    ) -> None:
        self._connections = connections
        self._config = config
        self._keys = RedisKeys(check_key_prefix(config.key_prefix))
        self._owner = uuid.uuid4().hex
        self._claim_timeout_ms = max(1, round(outbox_config.claim_timeout_seconds * 1000))
        self._lease_ms = max(1, round(outbox_config.claim_lease_seconds * 1000))
        self._sweep = config.expired_claim_sweep

    @property
    def owner(self) -> str:
        """Token fencing this instance's claims."""
        return self._owner

    def _target(self) -> OutboxTarget:
        location = f"{redact_url(self._config.url)} key prefix {self._keys.prefix}"
        if self._config.cluster:
            location += " (cluster)"
        settings = {"url": f"{SPAKKY_OUTBOX_REDIS_CONFIG_ENV_PREFIX}URL", "key_prefix": KEY_PREFIX_VARIABLE}
        return OutboxTarget(
            backend=STORAGE_BACKEND,
            location=location,
            defaulted=tuple(
                variable
                for name, variable in settings.items()
                if name not in self._config.model_fields_set
            ),
        )

    def _fetch_args(self, limit: int, max_retry: int) -> list[RedisValue]:
        return [
            self._keys.prefix,
            limit,
            max_retry,
            min(self._claim_timeout_ms, self._lease_ms),
            self._owner,
            self._sweep,
            key_run(limit),
        ]

    def _settle_args(
        self,
        mode: str,
        message_ids: Sequence[UUID | bytes],
        *,
        delay_seconds: float = 0.0,
        error: str | None = None,
    ) -> list[RedisValue]:
        return [
            self._keys.prefix,
            self._owner,
            mode,
            max(0, round(delay_seconds * 1000)),
            "" if error is None else error,
            "0" if error is None else "1",
            _joined(message_ids),
        ]

    def _renew_args(self, message_ids: Sequence[UUID]) -> list[RedisValue]:
        return [
            self._keys.prefix,
            self._owner,
            self._claim_timeout_ms,
            self._lease_ms,
            _joined(message_ids),
        ]

    def _requeue_steps(
        self, message_ids: Sequence[UUID] | None, limit: int
    ) -> Iterator[_Step]:
        if message_ids is None:
            for step in _steps(limit, _REQUEUE_CHUNK):
                yield [self._keys.prefix, step, "oldest"], step
            return
        chosen = message_ids[: max(0, limit)]
        for start in range(0, len(chosen), _REQUEUE_CHUNK):
            part = chosen[start : start + _REQUEUE_CHUNK]
            yield [self._keys.prefix, len(part), "ids", _joined(part)], None

    def _purge_steps(self, before: datetime, limit: int) -> Iterator[_Step]:
        cutoff = round(before.timestamp() * 1000)
        for step in _steps(limit, _PURGE_CHUNK):
            yield [self._keys.prefix, cutoff, step], step

    @staticmethod
    def _decode(reply: Any) -> tuple[list[OutboxMessage], list[tuple[bytes, str]]]:
        """Split a framed reply into messages and (id, reason) of undecodable ones."""
        items = unframe(cast(bytes, reply))
        messages: list[OutboxMessage] = []
        broken: list[tuple[bytes, str]] = []
        for start in range(1, len(items), _WIDTH):
            message_id = cast(bytes, items[start])
            try:
                messages.append(to_message(message_id, items[start + 1 : start + _WIDTH]))
            except Exception as error:  # any damage: the message is set aside, the batch goes on
                broken.append((message_id, undecodable_reason(error)))
        return messages, broken

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
    IAsyncOutboxLiveness,
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

    def _script(self, name: str, client: AsyncRedisClient) -> AsyncScript:
        if self._scripts is None:
            self._scripts = {k: client.register_script(v) for k, v in _SCRIPTS.items()}
        return self._scripts[name]

    async def _run(self, name: str, args: Sequence[RedisValue]) -> Any:
        """Run a script on the running loop's client (re-loaded on NOSCRIPT)."""
        client = self._connections.async_client
        try:
            return await self._script(name, client)(
                keys=[self._keys.pending], args=args, client=client
            )
        except _UNAVAILABLE as error:
            raise OutboxStorageUnavailableError(str(error)) from error

    @override
    def target(self) -> OutboxTarget:
        """Backend ``redis``, the URL without password, and the key prefix."""
        return self._target()

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
        # EVAL, not EVALSHA: inside MULTI an unknown script would fail at EXEC
        # and the business writes would commit without the message
        await cast(Any, pipeline.execute_command("EVAL", scripts.SAVE, 1, self._keys.pending, *args))

    @override
    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        """Claim up to ``limit`` messages for this instance, oldest first, keys as runs."""
        if limit <= 0:
            return []
        messages, broken = self._decode(
            await self._run("fetch", self._fetch_args(limit, max_retry))
        )
        for message_id, reason in broken:
            await self._run(
                "settle", self._settle_args(_Settle.ABANDON, [message_id], error=reason)
            )
        return messages

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
        """Spend one retry; the claim stays until it ends."""
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
    async def renew_claims(self, message_ids: Sequence[UUID]) -> int:
        """Push the lease of the claims this instance still holds; return how many."""
        if not message_ids:
            return 0
        return int(await self._run("renew", self._renew_args(message_ids)))

    @override
    async def wait_for_messages(self, timeout: float) -> bool:
        """Block on the wake-up marker (BZPOPMIN) for up to ``timeout`` seconds."""
        client = self._connections.async_client
        try:
            if timeout <= 0:
                popped: Any = await client.zpopmin(self._keys.wake)
                return bool(popped)
            popped = await client.bzpopmin(self._keys.wake, timeout)
        except _UNAVAILABLE as error:
            raise OutboxStorageUnavailableError(str(error)) from error
        return popped is not None

    @override
    async def stats(self) -> OutboxStats:
        """Count messages by state and measure the oldest pending one."""
        return self._stats(await self._run("stats", [self._keys.prefix]))

    @override
    async def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        """Return up to ``limit`` abandoned messages, oldest first, with their last error.

        Messages too damaged to decode are left out of the list.
        """
        if limit <= 0:
            return []
        return self._decode(await self._run("abandoned", [self._keys.prefix, limit]))[0]

    @override
    async def requeue_abandoned(
        self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000
    ) -> int:
        """Make up to ``limit`` abandoned messages pending again (None: the oldest ones)."""
        return await self._run_steps("requeue", self._requeue_steps(message_ids, limit))

    @override
    async def purge_published(self, before: datetime, limit: int = 10_000) -> int:
        """Delete up to ``limit`` messages published before ``before``."""
        return await self._run_steps("purge", self._purge_steps(before, limit))

    async def _run_steps(self, name: str, steps: Iterator[_Step]) -> int:
        done = 0
        for args, step in steps:
            count = int(await self._run(name, args))
            done += count
            if step is not None and count < step:
                break
        return done


@Pod()
class RedisOutboxStorage(
    _RedisOutboxBase,
    IOutboxStorage,
    IOutboxBatchAcknowledgement,
    IOutboxRetryScheduling,
    IOutboxWakeUp,
    IOutboxAdministration,
    IOutboxLiveness,
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

    def _script(self, name: str, client: SyncRedisClient) -> Script:
        if self._scripts is None:
            self._scripts = {k: client.register_script(v) for k, v in _SCRIPTS.items()}
        return self._scripts[name]

    def _run(self, name: str, args: Sequence[RedisValue]) -> Any:
        """Run a script on the shared client (re-loaded on NOSCRIPT)."""
        client = self._connections.client
        try:
            return self._script(name, client)(
                keys=[self._keys.pending], args=args, client=client
            )
        except _UNAVAILABLE as error:
            raise OutboxStorageUnavailableError(str(error)) from error

    @override
    def target(self) -> OutboxTarget:
        """Backend ``redis``, the URL without password, and the key prefix."""
        return self._target()

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
        # EVAL, not EVALSHA: see the asyncio storage
        pipeline.execute_command("EVAL", scripts.SAVE, 1, self._keys.pending, *args)

    @override
    def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        """Claim up to ``limit`` messages for this instance, oldest first, keys as runs."""
        if limit <= 0:
            return []
        messages, broken = self._decode(
            self._run("fetch", self._fetch_args(limit, max_retry))
        )
        for message_id, reason in broken:
            self._run("settle", self._settle_args(_Settle.ABANDON, [message_id], error=reason))
        return messages

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
        """Spend one retry; the claim stays until it ends."""
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
    def renew_claims(self, message_ids: Sequence[UUID]) -> int:
        """Push the lease of the claims this instance still holds; return how many."""
        if not message_ids:
            return 0
        return int(self._run("renew", self._renew_args(message_ids)))

    @override
    def wait_for_messages(self, timeout: float) -> bool:
        """Block on the wake-up marker (BZPOPMIN) for up to ``timeout`` seconds."""
        client = self._connections.client
        try:
            if timeout <= 0:
                return bool(client.zpopmin(self._keys.wake))
            popped: Any = client.bzpopmin(self._keys.wake, timeout)
        except _UNAVAILABLE as error:
            raise OutboxStorageUnavailableError(str(error)) from error
        return popped is not None

    @override
    def stats(self) -> OutboxStats:
        """Count messages by state and measure the oldest pending one."""
        return self._stats(self._run("stats", [self._keys.prefix]))

    @override
    def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        """Return up to ``limit`` abandoned messages, oldest first, with their last error.

        Messages too damaged to decode are left out of the list.
        """
        if limit <= 0:
            return []
        return self._decode(self._run("abandoned", [self._keys.prefix, limit]))[0]

    @override
    def requeue_abandoned(
        self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000
    ) -> int:
        """Make up to ``limit`` abandoned messages pending again (None: the oldest ones)."""
        return self._run_steps("requeue", self._requeue_steps(message_ids, limit))

    @override
    def purge_published(self, before: datetime, limit: int = 10_000) -> int:
        """Delete up to ``limit`` messages published before ``before``."""
        return self._run_steps("purge", self._purge_steps(before, limit))

    def _run_steps(self, name: str, steps: Iterator[_Step]) -> int:
        done = 0
        for args, step in steps:
            count = int(self._run(name, args))
            done += count
            if step is not None and count < step:
                break
        return done
