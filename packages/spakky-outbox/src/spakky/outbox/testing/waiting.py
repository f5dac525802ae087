"""Wait on a condition with a deadline: what tests do instead of fixed sleeps."""

import asyncio
import time
from collections.abc import Awaitable, Callable


def wait_for[T](probe: Callable[[], T], *, timeout: float, interval: float = 0.01) -> T:
    """Return ``probe()`` once truthy; fail when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


async def until[T](
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], *, timeout: float, interval: float = 0.05
) -> T:
    """Re-run the async ``probe`` until ``accept`` holds for its value and return it; fail when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)
