"""Wait on a condition with a deadline: what tests do instead of fixed sleeps."""

import time
from collections.abc import Callable


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
