"""The few things the async and sync relays do differently, written side by side.

The async relay calls the ``Async`` / ``_async`` names; its generated sync twin
calls the plain ones (see tools/unasync.py). Everything else the relays share.
"""

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from spakky.outbox.relay.state import SYNC_WAIT_SLICE_SECONDS

AsyncEvent = asyncio.Event
"""The async relay's stop event until the application sets its own."""
Event = threading.Event
"""The sync relay's stop event until the application sets its own."""
AsyncLock = asyncio.Lock
"""Serialises the async relay's storage writes with its claim renewals."""
Lock = threading.Lock
"""Serialises the sync relay's storage writes with its claim renewals (a thread)."""


async def sleep_async(seconds: float) -> None:
    """Pause the task."""
    await asyncio.sleep(seconds)


def sleep(seconds: float) -> None:
    """Pause the thread."""
    time.sleep(seconds)


async def rest_async(
    stop: asyncio.Event, delay: float, wake: Callable[[float], Awaitable[bool]] | None
) -> None:
    """Wait up to ``delay``; a stop, or ``wake`` (a storage's wake-up) returning, ends it early."""
    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(stop.wait())}
    if wake is not None:
        waiters.add(asyncio.ensure_future(wake(delay)))
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def rest(stop: threading.Event, delay: float, wake: Callable[[float], bool] | None) -> None:
    """Wait up to ``delay``; a stop, or ``wake`` reporting a commit, ends it early.

    A blocking wake-up wait runs in slices, so a stop is seen within one.
    """
    if wake is None:
        stop.wait(delay)
        return
    remaining = delay
    while remaining > 0 and not stop.is_set():
        step = min(remaining, SYNC_WAIT_SLICE_SECONDS)
        if wake(step):
            return
        remaining -= step


async def run_lanes_async(lanes: int, lane: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``lanes`` copies of ``lane`` as tasks until every one returns (the first failure cancels the rest)."""
    async with asyncio.TaskGroup() as group:
        for _ in range(lanes):
            group.create_task(lane())


def run_lanes(lanes: int, lane: Callable[[], None]) -> None:
    """Run ``lane`` once in this thread, whatever ``lanes`` asks.

    The sync relay works on one batch at a time: its storages and transports
    are called from the relay thread alone (and the claim renewer, under the
    relay's write lock), and lanes in threads would break that.
    """
    del lanes
    lane()


class AsyncRepeater:
    """Runs ``step`` every ``interval`` seconds in a task, until it returns False or is stopped.

    The task starts when the first step is due: most batches are settled
    before that, and then cost one timer instead of a task.
    """

    def __init__(self, step: Callable[[], Awaitable[bool]], interval: float, name: str) -> None:
        async def repeat() -> None:
            while await step():
                await asyncio.sleep(interval)

        loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None

        def start() -> None:
            self._task = loop.create_task(repeat(), name=name)

        self._due = loop.call_later(interval, start)

    async def stop(self) -> None:
        """Cancel the task (mid-step too) and wait until it ended; a step not yet due never runs."""
        self._due.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class Repeater:
    """Runs ``step`` every ``interval`` seconds in a daemon thread, until it returns False or is stopped."""

    def __init__(self, step: Callable[[], bool], interval: float, name: str) -> None:
        self._done = threading.Event()

        def repeat() -> None:
            while not self._done.wait(interval):
                if not step():
                    return

        threading.Thread(target=repeat, name=name, daemon=True).start()

    def stop(self) -> None:
        """Ask the thread to end after its current step; it is not waited for."""
        self._done.set()
