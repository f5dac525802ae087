"""Driver clients of a storage: one synchronous client for every thread, one asyncio client per event loop.

An asyncio client is bound to the event loop that opened its connections, and
an application may run several loops (the relay's, a web server's), so each
running loop gets its own client, and each is closed on its own loop.
"""

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Callable

CLOSE_TIMEOUT_SECONDS = 5.0
"""How long `StorageClients.close` waits for another running loop to close its client."""


class StorageClients[S, A]:
    """Lazily opened clients of one storage; the storage package supplies the driver calls."""

    _new_client: Callable[[], S]
    _close_client: Callable[[S], object]
    _new_async_client: Callable[[], A]
    _close_async_client: Callable[[A], Awaitable[object]]
    _lock: threading.Lock
    _client: S | None
    _async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, A]
    _closing: set[asyncio.Task[None]]

    def __init__(
        self,
        new_client: Callable[[], S],
        close_client: Callable[[S], object],
        new_async_client: Callable[[], A],
        close_async_client: Callable[[A], Awaitable[object]],
    ) -> None:
        """Open clients with ``new_client`` / ``new_async_client`` when first asked for.

        Args:
            new_client: Opens the synchronous client (thread-safe pools).
            close_client: Closes the synchronous client.
            new_async_client: Opens an asyncio client, called on the loop it serves.
            close_async_client: Closes an asyncio client, awaited on its own loop.
        """
        self._new_client = new_client
        self._close_client = close_client
        self._new_async_client = new_async_client
        self._close_async_client = close_async_client
        self._lock = threading.Lock()
        self._client = None
        self._async_clients = weakref.WeakKeyDictionary()
        self._closing = set()

    @property
    def client(self) -> S:
        """The synchronous client, shared by every thread."""
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    @property
    def async_client(self) -> A:
        """The asyncio client of the running event loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                client = self._new_async_client()
                self._async_clients[loop] = client
            return client

    def opened(self) -> list[S | A]:
        """Every client opened and not closed yet (to count connections in use)."""
        with self._lock:
            clients: list[S | A] = list(self._async_clients.values())
            if self._client is not None:
                clients.append(self._client)
        return clients

    async def aclose(self) -> None:
        """Close the running loop's asyncio client and the synchronous client."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.pop(loop, None)
        if client is not None:
            await self._close_async_client(client)
        self._close_sync()

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
                # this loop cannot be blocked on: close in a task, kept until done
                task = loop.create_task(self._close_on_loop(client))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            elif loop.is_running():
                future = asyncio.run_coroutine_threadsafe(self._close_on_loop(client), loop)
                try:
                    future.result(CLOSE_TIMEOUT_SECONDS)
                except Exception:
                    future.cancel()
            else:
                loop.run_until_complete(self._close_on_loop(client))
        self._close_sync()

    async def _close_on_loop(self, client: A) -> None:
        await self._close_async_client(client)

    def _close_sync(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            self._close_client(client)
