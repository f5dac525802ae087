"""`StorageClients`: one asyncio client per event loop, each closed on its own loop.

The Redis and MongoDB packages run the same helper with their real drivers;
here plain client objects record where they were opened and closed.
"""

import asyncio
import threading
from collections.abc import Iterator

import pytest
from spakky.outbox.backend.clients import StorageClients


class _Client:
    """Records the event loop it was opened on and the one it was closed on."""

    def __init__(self) -> None:
        try:
            self.opened_on: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.opened_on = None
        self.closed_on: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed_on = asyncio.get_running_loop()
        self.closed = True




@pytest.fixture
def other_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in its own thread, like a web server's beside the relay's."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


type _Opened = tuple[StorageClients[_Client, _Client], _Client, _Client]


def _open(other_loop: asyncio.AbstractEventLoop) -> _Opened:
    """Clients with the synchronous one and ``other_loop``'s asyncio one opened."""
    clients = StorageClients(_Client, lambda client: client.close(), _Client, lambda client: client.aclose())

    async def open_there() -> _Client:
        return clients.async_client

    theirs = asyncio.run_coroutine_threadsafe(open_there(), other_loop).result(30)
    return clients, clients.client, theirs


def test_storage_clients_two_loops_expect_one_client_each_closed_on_its_loop(
    other_loop: asyncio.AbstractEventLoop,
) -> None:
    """Each running loop gets its own client; `close` closes each on the loop that opened it."""
    clients, sync_client, theirs = _open(other_loop)

    async def scenario() -> tuple[_Client, asyncio.AbstractEventLoop]:
        ours = clients.async_client
        assert clients.async_client is ours
        assert ours is not theirs
        assert set(map(id, clients.opened())) == {id(ours), id(theirs), id(sync_client)}
        clients.close()
        async with asyncio.timeout(30):  # closed in a task of this very loop
            while not ours.closed:
                await asyncio.sleep(0.01)
        return ours, asyncio.get_running_loop()

    ours, our_loop = asyncio.run(scenario())
    assert (ours.opened_on, ours.closed_on) == (our_loop, our_loop)
    assert (theirs.opened_on, theirs.closed_on) == (other_loop, other_loop)
    assert sync_client.closed
    assert clients.opened() == []


def test_storage_clients_aclose_expect_only_running_loops_client_closed(
    other_loop: asyncio.AbstractEventLoop,
) -> None:
    """`aclose` closes the running loop's client and the synchronous one, not another loop's."""
    clients, sync_client, theirs = _open(other_loop)

    async def scenario() -> _Client:
        ours = clients.async_client
        await clients.aclose()
        return ours

    ours = asyncio.run(scenario())
    assert ours.closed and sync_client.closed
    assert not theirs.closed
    assert clients.opened() == [theirs]
    assert clients.client is not sync_client  # a later use opens a fresh one
