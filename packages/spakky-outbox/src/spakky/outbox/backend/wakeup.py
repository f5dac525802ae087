"""Process-wide wake-up signal a storage raises after committing messages.

Each outbox (table, collection) has one `WakeUpHub` per process: a saving
transaction signals it right after its commit, a backend listener (NOTIFY, a
change stream) signals it for commits of other processes, and waiting relays
wake up in any thread or event loop. Signals are hints only: relays keep polling.
"""

import asyncio
import contextlib
import threading
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
