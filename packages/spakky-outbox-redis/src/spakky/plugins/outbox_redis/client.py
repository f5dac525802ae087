"""Redis clients shared by the outbox storages and transactions: one server or a cluster."""

import threading
from collections.abc import Iterable
from typing import cast, override

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from spakky.core.pod.annotations.pod import Pod
from spakky.core.service.interfaces.service import IService
from spakky.outbox.backend.clients import StorageClients
from spakky.plugins.outbox_redis.config import RedisOutboxConfig, check_key_prefix

type RedisClient = redis.Redis | redis.cluster.RedisCluster
"""A synchronous client: one server, or redis-py's cluster client."""
type AsyncRedisClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
"""An asyncio client: one server, or redis-py's cluster client."""


@Pod()
class RedisOutboxConnectionManager(IService):
    """Holds the Redis clients of the outbox and closes them when the app stops.

    The synchronous client is shared by every thread. An asyncio client is
    bound to the event loop that opened its connections, so one is kept per
    event loop (the relay's loop and the web server's loop may differ). With
    ``SPAKKY_OUTBOX_REDIS__CLUSTER=true`` both are redis-py cluster clients.
    """

    _config: RedisOutboxConfig
    _clients: StorageClients[RedisClient, AsyncRedisClient]

    def __init__(self, config: RedisOutboxConfig) -> None:
        """Prepare lazily created clients for ``config.url``."""
        self.key_prefix = check_key_prefix(config.key_prefix)
        """Prefix (with hash tag) under which every outbox key lives."""
        self._config = config
        self._clients = StorageClients(
            self._new_client,
            lambda client: client.close(),
            self._new_async_client,
            lambda client: client.aclose(),
        )

    @property
    def client(self) -> RedisClient:
        """The synchronous client (thread-safe connection pools)."""
        return self._clients.client

    @property
    def async_client(self) -> AsyncRedisClient:
        """The asyncio client of the running event loop."""
        return self._clients.async_client

    def _new_client(self) -> RedisClient:
        # Our timeout, not redis-py's default: that is 5 s from redis-py 8.0
        # and none (wait forever) before it, and ``redis>=5.2`` allows either.
        url, timeout = self._config.url, self._config.socket_timeout_seconds
        if self._config.cluster:
            return redis.cluster.RedisCluster.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def _new_async_client(self) -> AsyncRedisClient:
        url, timeout = self._config.url, self._config.socket_timeout_seconds
        if self._config.cluster:
            return redis.asyncio.cluster.RedisCluster.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        return redis.asyncio.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def in_use_connections(self) -> int:
        """Count connections currently checked out of every pool (leak check)."""
        return sum(_in_use(client) for client in self._clients.opened())

    async def aclose(self) -> None:
        """Close the running loop's asyncio client and the synchronous client."""
        await self._clients.aclose()

    def close(self) -> None:
        """Close every client; asyncio ones on their own loop when it still runs."""
        self._clients.close()

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


def _in_use(client: RedisClient | AsyncRedisClient) -> int:
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
