"""Process-wide wake-up signal a storage raises after committing messages.

Each outbox (table, collection) has one `WakeUpHub` per process: a saving
transaction signals it right after its commit, a backend listener (NOTIFY, a
change stream) signals it for commits of other processes, and waiting relays
wake up in any thread or event loop. Signals are hints only: relays keep polling.
"""

import asyncio
import contextlib
import contextvars
import threading
from abc import ABC, abstractmethod
from asyncio import AbstractEventLoop, Future


def _wake(future: Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class WakeUpHub:
    """Process-wide signal that messages were committed to one outbox."""

    def __init__(self) -> None:
        """Start at generation 0 with no waiter."""
        self._condition = threading.Condition()
        self._generation = 0
        self._waiters: set[tuple[AbstractEventLoop, Future[None]]] = set()

    @property
    def generation(self) -> int:
        """How many signals this hub has received so far."""
        with self._condition:
            return self._generation

    def signal(self) -> None:
        """Wake every waiter, in any thread or event loop."""
        with self._condition:
            self._generation += 1
            self._condition.notify_all()
            waiters = list(self._waiters)
        for loop, future in waiters:
            # The loop may close meanwhile; a committing thread must never fail here.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, future)

    def wait(self, seen: int, timeout: float) -> bool:
        """Block until the generation differs from ``seen`` or ``timeout`` passes."""
        with self._condition:
            return self._condition.wait_for(
                lambda: self._generation != seen, timeout=max(0.0, timeout)
            )

    async def wait_async(self, seen: int, timeout: float) -> bool:
        """Wait until the generation differs from ``seen`` or ``timeout`` passes."""
        loop = asyncio.get_running_loop()
        future: Future[None] = loop.create_future()
        entry = (loop, future)
        with self._condition:
            if self._generation != seen:
                return True
            self._waiters.add(entry)
        try:
            done, _ = await asyncio.wait({future}, timeout=max(0.0, timeout))
            return bool(done)
        finally:
            with self._condition:
                self._waiters.discard(entry)
            future.cancel()


_hubs: dict[str, WakeUpHub] = {}
_hubs_lock = threading.Lock()


def wake_up_hub(name: str) -> WakeUpHub:
    """Return the process-wide hub of the outbox called ``name`` (e.g. a table)."""
    with _hubs_lock:
        hub = _hubs.get(name)
        if hub is None:
            hub = WakeUpHub()
            _hubs[name] = hub
        return hub


class Backoff:
    """A listener's reconnection delays: 0.5 s doubling up to 10 s, 0.5 s again once connected."""

    FIRST_SECONDS = 0.5
    LAST_SECONDS = 10.0

    def __init__(self) -> None:
        """Start before the first connection."""
        self._delay = self.FIRST_SECONDS
        self._reconnecting = False

    def connected(self, ready: asyncio.Event | threading.Event, hub: WakeUpHub) -> None:
        """The listening connection is open: set ``ready``, and signal ``hub`` after a reconnection (commits may have been missed meanwhile)."""
        ready.set()
        if self._reconnecting:
            hub.signal()
        self._delay = self.FIRST_SECONDS

    def lost(self, ready: asyncio.Event | threading.Event) -> float:
        """The connection is gone: clear ``ready`` and return how long to wait before the next attempt."""
        ready.clear()
        self._reconnecting = True
        delay, self._delay = self._delay, min(self._delay * 2, self.LAST_SECONDS)
        return delay


class ListenerTask(ABC):
    """A backend listener on the running event loop (a NOTIFY connection, a change stream) signalling a hub from a task of its own."""

    def __init__(self, hub: WakeUpHub) -> None:
        """Signal ``hub``; nothing runs before `start`."""
        self._hub = hub
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        """Set while the listening connection is open (used by tests)."""
        self.unsupported = False
        """Set once the backend refused to listen at all: `start` then starts nothing."""

    def start(self) -> None:
        """Start listening in a background task (idempotent), in a fresh context: never one a use case bound."""
        if self._task is None and not self.unsupported:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), context=contextvars.Context()
            )

    async def stop(self) -> None:
        """Cancel the task and wait until it closed its connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @abstractmethod
    async def _run(self) -> None:
        """Listen until cancelled, reconnecting after errors (see `Backoff`)."""


class ListenerThread(ABC):
    """Synchronous counterpart of `ListenerTask`: a daemon thread that stops when asked to."""

    def __init__(self, hub: WakeUpHub, name: str) -> None:
        """Signal ``hub`` from a thread called ``name``; nothing runs before `start`."""
        self._hub = hub
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()
        """Set while the listening connection is open (used by tests)."""
        self.unsupported = False
        """Set once the backend refused to listen at all: `start` then starts nothing."""

    def start(self) -> None:
        """Start the listening thread (idempotent)."""
        if self._thread is None and not self.unsupported:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread (within one poll of its connection) and wait for it."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    @abstractmethod
    def _run(self) -> None:
        """Listen until `stop`, reconnecting after errors (see `Backoff`)."""
