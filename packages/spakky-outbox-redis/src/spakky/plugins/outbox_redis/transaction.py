"""Spakky transactions over a Redis MULTI/EXEC pipeline bound to the current context.

A `@Transactional()` use case opens a pipeline; business code queues its
commands on it through `current_async_pipeline` / `current_pipeline`, the
outbox ``save`` queues its script on the same pipeline, and commit sends them
all in one MULTI/EXEC. Rollback discards the queue: nothing reaches Redis.

Commands queued on the pipeline return the pipeline, not a result: reads
inside the transaction see nothing queued yet (Redis semantics). Keep business
keys under the outbox hash tag when you run Redis Cluster.
"""

from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import override

import redis.asyncio
import redis.asyncio.client
import redis.client
from spakky.core.pod.annotations.pod import Pod
from spakky.data.persistency.transaction import (
    AbstractAsyncTransaction,
    AbstractTransaction,
)
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.error import RedisTransactionNotActiveError


@dataclass
class _AsyncScope:
    """One open asyncio transaction in a context."""

    pipeline: redis.asyncio.client.Pipeline
    depth: int = 0
    rollback_only: bool = False
    token: Token["_AsyncScope | None"] | None = field(default=None)


@dataclass
class _SyncScope:
    """One open synchronous transaction in a context."""

    pipeline: redis.client.Pipeline
    depth: int = 0
    rollback_only: bool = False
    token: Token["_SyncScope | None"] | None = field(default=None)


_async_scope: ContextVar[_AsyncScope | None] = ContextVar(
    "spakky_outbox_redis_async_transaction", default=None
)
_sync_scope: ContextVar[_SyncScope | None] = ContextVar(
    "spakky_outbox_redis_transaction", default=None
)


def current_async_pipeline() -> redis.asyncio.client.Pipeline:
    """Return the MULTI/EXEC pipeline of the asyncio transaction open in this context.

    Queue business writes on it (``await pipe.hset(...)``); they are executed
    together with the outbox messages when the transaction commits.

    Raises:
        RedisTransactionNotActiveError: No `AsyncRedisTransaction` is open here.
    """
    scope = _async_scope.get()
    if scope is None:
        raise RedisTransactionNotActiveError()
    return scope.pipeline


def current_pipeline() -> redis.client.Pipeline:
    """Return the MULTI/EXEC pipeline of the synchronous transaction open in this context.

    Raises:
        RedisTransactionNotActiveError: No `RedisTransaction` is open here.
    """
    scope = _sync_scope.get()
    if scope is None:
        raise RedisTransactionNotActiveError()
    return scope.pipeline


@Pod()
class AsyncRedisTransaction(AbstractAsyncTransaction):
    """Asyncio transaction: a MULTI/EXEC pipeline executed at commit.

    Nested transactions in one context join the outermost one, which alone
    executes (or discards) the queued commands.
    """

    _connections: RedisOutboxConnectionManager

    def __init__(
        self, config: RedisOutboxConfig, connections: RedisOutboxConnectionManager
    ) -> None:
        """Bind the transaction to the outbox's Redis clients."""
        super().__init__(autocommit=config.autocommit)
        self._connections = connections

    @override
    async def initialize(self) -> None:
        """Open a pipeline in this context, or join the one already open."""
        scope = _async_scope.get()
        if scope is not None:
            scope.depth += 1
            return
        scope = _AsyncScope(self._connections.async_client.pipeline(transaction=True))
        scope.token = _async_scope.set(scope)

    @override
    async def commit(self) -> None:
        """Send the queued commands in one MULTI/EXEC (outermost transaction only)."""
        scope = _async_scope.get()
        if scope is None or scope.depth > 0:
            return
        if scope.rollback_only:
            await scope.pipeline.reset()
            return
        await scope.pipeline.execute()

    @override
    async def rollback(self) -> None:
        """Discard the queued commands; an inner rollback dooms the outer one."""
        scope = _async_scope.get()
        if scope is None:
            return
        if scope.depth > 0:
            scope.rollback_only = True
            return
        await scope.pipeline.reset()

    @override
    async def dispose(self) -> None:
        """Leave the transaction; the outermost one releases its pipeline."""
        scope = _async_scope.get()
        if scope is None:
            return
        if scope.depth > 0:
            scope.depth -= 1
            return
        await scope.pipeline.reset()
        if scope.token is not None:
            _async_scope.reset(scope.token)


@Pod()
class RedisTransaction(AbstractTransaction):
    """Synchronous transaction: a MULTI/EXEC pipeline executed at commit."""

    _connections: RedisOutboxConnectionManager

    def __init__(
        self, config: RedisOutboxConfig, connections: RedisOutboxConnectionManager
    ) -> None:
        """Bind the transaction to the outbox's Redis clients."""
        super().__init__(autocommit=config.autocommit)
        self._connections = connections

    @override
    def initialize(self) -> None:
        """Open a pipeline in this context, or join the one already open."""
        scope = _sync_scope.get()
        if scope is not None:
            scope.depth += 1
            return
        scope = _SyncScope(self._connections.client.pipeline(transaction=True))
        scope.token = _sync_scope.set(scope)

    @override
    def commit(self) -> None:
        """Send the queued commands in one MULTI/EXEC (outermost transaction only)."""
        scope = _sync_scope.get()
        if scope is None or scope.depth > 0:
            return
        if scope.rollback_only:
            scope.pipeline.reset()
            return
        scope.pipeline.execute()

    @override
    def rollback(self) -> None:
        """Discard the queued commands; an inner rollback dooms the outer one."""
        scope = _sync_scope.get()
        if scope is None:
            return
        if scope.depth > 0:
            scope.rollback_only = True
            return
        scope.pipeline.reset()

    @override
    def dispose(self) -> None:
        """Leave the transaction; the outermost one releases its pipeline."""
        scope = _sync_scope.get()
        if scope is None:
            return
        if scope.depth > 0:
            scope.depth -= 1
            return
        scope.pipeline.reset()
        if scope.token is not None:
            _sync_scope.reset(scope.token)
