"""Redis clients shared by the outbox storages and transactions: one server or a cluster."""

import asyncio
import threading
import weakref
from collections.abc import Iterable
from typing import cast, override

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from spakky.core.pod.annotations.pod import Pod
from spakky.core.service.interfaces.service import IService
from spakky.plugins.outbox_redis.config import RedisOutboxConfig, check_key_prefix

type SyncRedisClient = redis.Redis | redis.cluster.RedisCluster
"""A synchronous client: one server, or redis-py's cluster client."""
type AsyncRedisClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
"""An asyncio client: one server, or redis-py's cluster client."""

_CLOSE_TIMEOUT_SECONDS = 5.0


@Pod()
class RedisOutboxConnectionManager(IService):
    """Holds the Redis clients of the outbox and closes them when the app stops.

    The synchronous client is shared by every thread. An asyncio client is
    bound to the event loop that opened its connections, so one is kept per
    event loop (the relay's loop and the web server's loop may differ). With
    ``SPAKKY_OUTBOX_REDIS__CLUSTER=true`` both are redis-py cluster clients.
    """

    _config: RedisOutboxConfig
    _lock: threading.Lock
    _client: SyncRedisClient | None
    _closing: set[asyncio.Task[None]]
    _async_clients: weakref.WeakKeyDictionary[
        asyncio.AbstractEventLoop, AsyncRedisClient
    ]

    def __init__(self, config: RedisOutboxConfig) -> None:
        """Prepare lazily created clients for ``config.url``."""
        check_key_prefix(config.key_prefix)
        self._config = config
        self._lock = threading.Lock()
        self._client = None
        self._async_clients = weakref.WeakKeyDictionary()
        self._closing = set()

    @property
    def key_prefix(self) -> str:
        """Prefix (with hash tag) under which every outbox key lives."""
        return self._config.key_prefix

    @property
    def cluster(self) -> bool:
        """Whether the clients talk to a Redis Cluster."""
        return self._config.cluster

    @property
    def client(self) -> SyncRedisClient:
        """The synchronous client (thread-safe connection pools)."""
        with self._lock:
            if self._client is None:
                if self._config.cluster:
                    self._client = redis.cluster.RedisCluster.from_url(self._config.url)
                else:
                    self._client = redis.Redis.from_url(self._config.url)
            return self._client

    @property
    def async_client(self) -> AsyncRedisClient:
        """The asyncio client of the running event loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                if self._config.cluster:
                    client = redis.asyncio.cluster.RedisCluster.from_url(
                        self._config.url
                    )
                else:
                    client = redis.asyncio.Redis.from_url(self._config.url)
                self._async_clients[loop] = client
            return client

    def in_use_connections(self) -> int:
        """Count connections currently checked out of every pool (leak check)."""
        with self._lock:
            clients: list[SyncRedisClient | AsyncRedisClient] = list(
                self._async_clients.values()
            )
            if self._client is not None:
                clients.append(self._client)
        return sum(_in_use(client) for client in clients)

    async def aclose(self) -> None:
        """Close the running loop's asyncio client and the synchronous client."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.pop(loop, None)
        if client is not None:
            await client.aclose()
        self._close_sync()

    def _close_sync(self) -> None:
        """Close the synchronous client, if one was opened."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def close(self) -> None:
        """Close every client; asyncio ones on their own loop when it still runs."""
        with self._lock:
            async_clients = list(self._async_clients.items())
            self._async_clients.clear()
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, client in async_clients:
            if loop.is_closed():
                continue
            if loop is current:
                self._closing.add(loop.create_task(client.aclose()))
            elif loop.is_running():
                future = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
                try:
                    future.result(_CLOSE_TIMEOUT_SECONDS)
                except Exception:
                    future.cancel()
            else:
                loop.run_until_complete(client.aclose())
        self._close_sync()

    @override
    def set_stop_event(self, stop_event: threading.Event) -> None:
        """Unused: the manager has no loop of its own."""

    @override
    def start(self) -> None:
        """Nothing to start: clients connect lazily."""

    @override
    def stop(self) -> None:
        """Close every client when the application stops."""
        self.close()


def _pool_in_use(pool: redis.ConnectionPool | redis.asyncio.ConnectionPool) -> int:
    return len(list(cast(Iterable[object], pool._get_in_use_connections())))


def _in_use(client: SyncRedisClient | AsyncRedisClient) -> int:
    """Connections checked out of one client's pools (every node's for a cluster)."""
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        return sum(
            len(node._connections) - len(node._free) for node in client.get_nodes()
        )
    if isinstance(client, redis.cluster.RedisCluster):
        return sum(
            _pool_in_use(cast(redis.ConnectionPool, node.redis_connection.connection_pool))
            for node in client.get_nodes()
            if node.redis_connection is not None
        )
    return _pool_in_use(client.connection_pool)
