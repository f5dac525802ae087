"""Redis clients shared by the outbox storages and transactions."""

import asyncio
import threading
import weakref
from collections.abc import Iterable
from typing import cast, override

import redis
import redis.asyncio
from spakky.core.pod.annotations.pod import Pod
from spakky.core.service.interfaces.service import IService
from spakky.plugins.outbox_redis.config import RedisOutboxConfig, check_key_prefix

_CLOSE_TIMEOUT_SECONDS = 5.0


@Pod()
class RedisOutboxConnectionManager(IService):
    """Holds the Redis clients of the outbox and closes them when the app stops.

    The synchronous client is shared by every thread. An asyncio client is
    bound to the event loop that opened its connections, so one is kept per
    event loop (the relay's loop and the web server's loop may differ).
    """

    _config: RedisOutboxConfig
    _lock: threading.Lock
    _client: redis.Redis | None
    _closing: set[asyncio.Task[None]]
    _async_clients: weakref.WeakKeyDictionary[
        asyncio.AbstractEventLoop, redis.asyncio.Redis
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
    def client(self) -> redis.Redis:
        """The synchronous client (thread-safe connection pool)."""
        with self._lock:
            if self._client is None:
                self._client = redis.Redis.from_url(self._config.url)
            return self._client

    @property
    def async_client(self) -> redis.asyncio.Redis:
        """The asyncio client of the running event loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                client = redis.asyncio.Redis.from_url(self._config.url)
                self._async_clients[loop] = client
            return client

    def in_use_connections(self) -> int:
        """Count connections currently checked out of every pool (leak check)."""
        with self._lock:
            pools: list[redis.ConnectionPool | redis.asyncio.ConnectionPool] = [
                c.connection_pool for c in self._async_clients.values()
            ]
            if self._client is not None:
                pools.append(self._client.connection_pool)
        return sum(
            len(list(cast(Iterable[object], pool._get_in_use_connections())))
            for pool in pools
        )

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
