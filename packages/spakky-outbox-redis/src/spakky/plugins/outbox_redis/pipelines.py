"""The MULTI/EXEC pipelines of the Redis transactions, bound to the current context.

Shared by both flavours of `spakky.plugins.outbox_redis.transaction`; see there.
"""

from collections.abc import Generator, Mapping, Sequence
from typing import Any, cast, override

import redis.asyncio
import redis.asyncio.client
import redis.asyncio.cluster
import redis.client
import redis.cluster
from redis.exceptions import RedisClusterException
from spakky.outbox.backend.transaction import TransactionScope, TransactionScopes
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.error import (
    CrossSlotWriteError,
    RedisTransactionNotActiveError,
    UncheckedClusterCommandError,
)

type Pipeline = redis.client.Pipeline | redis.cluster.ClusterPipeline
"""The MULTI/EXEC pipeline of a synchronous transaction."""
type AsyncPipeline = redis.asyncio.client.Pipeline | redis.asyncio.cluster.ClusterPipeline
"""The MULTI/EXEC pipeline of an asyncio transaction."""

_SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})
"""Commands whose keys follow a key count (``EVAL script numkeys key...``)."""


def command_keys(commands: Mapping[str, Any], args: Sequence[Any]) -> list[Any] | None:
    """Return the keys a command names, from the server's command table.

    Args:
        commands: ``COMMAND`` output by lower-case name (redis-py's cluster
            clients keep it as ``commands_parser.commands``).
        args: The command and its arguments, as queued.

    Returns:
        The keys, or None when only the server can tell (movable keys).
    """
    name = str(args[0]).lower()
    if name in _SCRIPT_COMMANDS:
        return list(args[3 : 3 + int(args[2])])
    spec = cast(Mapping[str, Any] | None, commands.get(name))
    if spec is None or "movablekeys" in spec["flags"]:
        return None
    first, last, step = spec["first_key_pos"], spec["last_key_pos"], spec["step_count"]
    if first <= 0 or step <= 0:
        return []
    if last < 0:
        last += len(args)
    return [args[i] for i in range(first, last + 1, step)]


def _cross_slot(key: object, slot: int, prefix: str, outbox_slot: int) -> CrossSlotWriteError:
    return CrossSlotWriteError(
        f"key {key!r} maps to slot {slot}, the outbox {prefix!r} to slot "
        f"{outbox_slot} (SPAKKY_OUTBOX_REDIS__KEY_PREFIX)"
    )


class _GuardedClusterPipeline(redis.cluster.ClusterPipeline):
    """Cluster MULTI/EXEC pipeline that refuses, when queued, a key outside the outbox's slot."""

    outbox_prefix: str

    @override
    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        outbox_slot = self.keyslot(self.outbox_prefix)
        keys = command_keys(cast(Mapping[str, Any], self.commands_parser.commands), args)
        if keys is None:
            # movable keys: redis-py asks the server which slot they are in
            try:
                slot = self.determine_slot(*args)
            except RedisClusterException as error:
                raise CrossSlotWriteError(f"{args[0]}: {error}") from None
            if slot is not None and slot != outbox_slot:
                raise _cross_slot(args[1:], slot, self.outbox_prefix, outbox_slot)
        for key in keys or ():
            if (slot := self.keyslot(key)) != outbox_slot:
                raise _cross_slot(key, slot, self.outbox_prefix, outbox_slot)
        return super().execute_command(*args, **kwargs)


class _AsyncGuardedClusterPipeline(redis.asyncio.cluster.ClusterPipeline):
    """Asyncio cluster MULTI/EXEC pipeline that refuses, when queued, a key outside the outbox's slot."""

    outbox_prefix: str

    @override
    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        client = self.cluster_client
        outbox_slot = client.keyslot(self.outbox_prefix)
        keys = command_keys(client.commands_parser.commands, args)
        if keys is None:
            raise UncheckedClusterCommandError(str(args[0]))
        for key in keys:
            if (slot := client.keyslot(key)) != outbox_slot:
                raise _cross_slot(key, slot, self.outbox_prefix, outbox_slot)
        return super().execute_command(*args, **kwargs)

    @override
    def __await__(self) -> Generator[Any, None, "_AsyncGuardedClusterPipeline"]:
        # redis-py's cluster pipeline re-initialises (emptying its queue) when
        # awaited; ``await pipe.hset(...)`` must keep what was queued, as on one server
        return self._queued().__await__()

    async def _queued(self) -> "_AsyncGuardedClusterPipeline":
        return self


async def execute_now_async(pipeline: AsyncPipeline, *args: Any) -> Any:
    """Run a command on the transaction's connection at once (WATCH, a read while watching, UNWATCH).

    The asyncio twin of `execute_now`: redis-py's asyncio cluster transaction
    runs such commands on a new event loop in a thread, where its connection
    does not belong, so the guarded cluster pipeline runs them on this loop
    (its strategy books the slot and the WATCH, and hands back the command's
    coroutine).
    """
    if isinstance(pipeline, _AsyncGuardedClusterPipeline):
        strategy: Any = pipeline._execution_strategy  # pyright: ignore[reportPrivateUsage]
        return await (await strategy._execute_command(*args))
    result: Any = await cast(Any, pipeline.execute_command(*args))
    return result


def execute_now(pipeline: Pipeline, *args: Any) -> Any:
    """Run a command on the transaction's connection at once (WATCH, a read while watching, UNWATCH)."""
    return cast(Any, pipeline.execute_command(*args))


async_scopes = TransactionScopes[TransactionScope[AsyncPipeline]](
    "spakky_outbox_redis_async_transaction"
)
scopes = TransactionScopes[TransactionScope[Pipeline]]("spakky_outbox_redis_transaction")


def current_async_pipeline() -> AsyncPipeline:
    """Return the MULTI/EXEC pipeline of the asyncio transaction open in this context.

    Queue business writes on it (``await pipe.hset(...)``); they are executed
    together with the outbox messages when the transaction commits.

    Raises:
        RedisTransactionNotActiveError: No `AsyncRedisTransaction` is open here.
    """
    return async_scopes.required(RedisTransactionNotActiveError).resource


def current_pipeline() -> Pipeline:
    """Return the MULTI/EXEC pipeline of the synchronous transaction open in this context.

    Raises:
        RedisTransactionNotActiveError: No `RedisTransaction` is open here.
    """
    return scopes.required(RedisTransactionNotActiveError).resource


async def open_async_pipeline(connections: RedisOutboxConnectionManager) -> AsyncPipeline:
    """Open the MULTI/EXEC pipeline of a new async transaction (guarded on a cluster)."""
    client = connections.async_client
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        await client.initialize()  # loads the command table the key check reads
        # redis-py's protocol classes leave an attribute abstract that the real class sets
        pipeline = _AsyncGuardedClusterPipeline(client, transaction=True)  # pyright: ignore[reportAbstractUsage]
        pipeline.outbox_prefix = connections.key_prefix
        return pipeline
    return client.pipeline(transaction=True)


def open_pipeline(connections: RedisOutboxConnectionManager) -> Pipeline:
    """Open the MULTI/EXEC pipeline of a new sync transaction (guarded on a cluster)."""
    client = connections.client
    if isinstance(client, redis.cluster.RedisCluster):
        pipeline = client.pipeline(transaction=True)
        # same state, one method more: redis-py builds the pipeline, we add the check
        pipeline.__class__ = _GuardedClusterPipeline
        cast(_GuardedClusterPipeline, pipeline).outbox_prefix = connections.key_prefix
        return pipeline
    return client.pipeline(transaction=True)


